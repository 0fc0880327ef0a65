// criu's logs (one a dump, restore, move and lazy-pages daemon) pile up in DATA_DIR/logs: older ones are removed.
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';

/** How often a running agent looks for logs past their time, ms. */
const PRUNE_EVERY_MS = 3600_000;

/**
 * Removes the regular files in `dir` last written more than `maxAgeMs` ago
 * (by `now`). A file that vanishes or cannot be removed meanwhile is skipped.
 * Returns how many it removed.
 */
export async function pruneLogs(dir: string, maxAgeMs: number, now = Date.now()): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    const st = await stat(path).catch(() => null);
    if (!st?.isFile() || now - st.mtimeMs <= maxAgeMs) continue;
    if (await rm(path).then(() => true, () => false)) removed++;
  }
  return removed;
}

/**
 * Prunes `dir` now and every hour while the agent runs; `days` 0 keeps every
 * log. Returns what stops it.
 */
export function keepLogsFor(dir: string, days: number, log: Logger): () => void {
  if (days <= 0) return () => undefined;
  const prune = (): void =>
    void pruneLogs(dir, days * 86_400_000).then(
      (removed) => removed > 0 && log.info({ removed, days }, 'criu logs past their time removed'),
      (err: unknown) => log.warn({ err: errorMessage(err) }, 'could not prune criu logs'),
    );
  prune();
  const timer = setInterval(prune, PRUNE_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}
