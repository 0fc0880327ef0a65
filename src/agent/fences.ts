import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { StaleFenceError } from '../core/errors.js';

const FenceFile = z.record(z.string(), z.number().int().nonnegative());

/**
 * The highest fencing token seen per session. The scheduler's workers send
 * the token of the session's lock with every change; a call with an older
 * token comes from a worker that lost the lock (paused, partitioned) and is
 * refused, so two workers never act on one session at once. Calls without a
 * token (an operator's CLI) are let through.
 */
export class Fences {
  private seen: Record<string, number> = {};
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly dataDir: string) {}

  private get file(): string {
    return join(this.dataDir, 'fences.json');
  }

  async load(): Promise<void> {
    try {
      this.seen = FenceFile.parse(JSON.parse(await readFile(this.file, 'utf8')));
    } catch {
      this.seen = {};
    }
  }

  /** Admits a call carrying `token` for the session, or throws StaleFenceError. */
  async admit(sessionId: string, token: number | undefined): Promise<void> {
    if (token === undefined) return;
    const highest = this.seen[sessionId] ?? 0;
    if (token < highest) {
      throw new StaleFenceError(`session ${sessionId}: fencing token ${token} is older than ${highest}; another worker holds the session's lock now, so this call is refused`);
    }
    if (token === highest) return;
    this.seen[sessionId] = token;
    const snapshot = JSON.stringify(this.seen);
    // Written in order, each whole (temp file, then rename).
    this.writing = this.writing.then(async () => {
      await writeFile(`${this.file}.tmp`, snapshot, { mode: 0o600 });
      await rename(`${this.file}.tmp`, this.file);
    });
    await this.writing;
  }
}

/** The header a worker's fencing token travels in. */
export const FENCE_HEADER = 'x-hubshift-fence';

export function parseFenceHeader(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(Array.isArray(value) ? value[0] : value);
  if (!Number.isSafeInteger(n) || n < 0) throw new z.ZodError([{ code: 'custom', path: [FENCE_HEADER], message: 'must be a non-negative integer', input: value }]);
  return n;
}
