// The pages a session's processes asked for first after a lazy restore, kept with its next checkpoint so that the
// restore after it brings them back eagerly.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { faultedPages } from '../criu/lazy-faults.js';
import { PAGE, restorePagesEagerly } from '../criu/pagemap.js';
import { readJsonRecord, writeJsonRecord } from '../util/fs.js';
import { sessionPaths } from './sandbox.js';

/** The file's name, in the session's directory and among a checkpoint's side files. */
export const HOT_PAGES_FILE = 'hot-pages.json';

/**
 * Pages a process, at most. After a 1 GiB kernel's restore here its
 * `kernel_info` and first execute faulted on ~1 900 pages, one at a time,
 * each behind the daemon's background copy; restored eagerly they cost
 * criu's fill ~10 µs each. 4 096 pages (16 MiB) bound that at ~0.04 s.
 */
export const MAX_HOT_PAGES = 4096;

// Page-aligned: entries split at any other address would be refused by criu restore, or (post-copy) fail the move.
const Runs = z.array(z.tuple([z.number().int().nonnegative().multipleOf(PAGE), z.number().int().positive()]));
const HotPagesFile = z.object({
  version: z.literal(1),
  /** By pid in the session: runs of pages, [first page's address, pages], sorted. */
  processes: z.record(z.string().regex(/^\d+$/), Runs),
});
type HotPagesFile = z.infer<typeof HotPagesFile>;

/** Hot pages by pid in the session: page addresses, ascending, each once (as readHotPages gives them). */
export type HotPages = Map<number, number[]>;

/** The hot pages in a file written by recordHotPages; none when it is missing or not one. */
export async function readHotPages(path: string): Promise<HotPages> {
  const f = await readJsonRecord(path, HotPagesFile);
  const out: HotPages = new Map();
  for (const [pid, runs] of Object.entries(f?.processes ?? {})) {
    const pages = runs.flatMap(([start, n]) => Array.from({ length: Math.min(n, MAX_HOT_PAGES) }, (_, i) => start + i * PAGE)).slice(0, MAX_HOT_PAGES);
    // Ascending and each once whatever the file's order: every user splits or walks pagemap entries in order.
    out.set(Number(pid), [...new Set(pages)].sort((a, b) => a - b));
  }
  return out;
}

/**
 * Marks the hot pages eager in a verified image directory about to be
 * restored lazily (restorePagesEagerly). A process without a pagemap here,
 * or none that reads, is skipped. Returns how many pages became eager.
 */
export function applyHotPages(imagesDir: string, hot: HotPages): number {
  let eager = 0;
  for (const [pid, pages] of hot) {
    try {
      eager += restorePagesEagerly(imagesDir, pid, pages);
    } catch {
      /* the process is gone since, or its pagemap unreadable: criu restore says so if it matters */
    }
  }
  return eager;
}

/**
 * After a lazy restore's daemon has served every page: writes to `path` the
 * pages its log says were faulted on, first, then those this restore brought
 * eagerly (`applied`, which no longer fault), up to MAX_HOT_PAGES a process.
 * Returns how many pages it wrote.
 */
export async function recordHotPages(path: string, daemonLog: string, applied: HotPages): Promise<number> {
  const faulted = faultedPages(await readFile(daemonLog, 'utf8'), MAX_HOT_PAGES);
  const file: HotPagesFile = { version: 1, processes: {} };
  let total = 0;
  for (const pid of new Set([...faulted.keys(), ...applied.keys()])) {
    const pages = [...new Set([...(faulted.get(pid) ?? []), ...(applied.get(pid) ?? [])])].slice(0, MAX_HOT_PAGES).sort((a, b) => a - b);
    if (pages.length === 0) continue;
    file.processes[String(pid)] = runsOf(pages);
    total += pages.length;
  }
  if (total > 0) await writeJsonRecord(path, file);
  return total;
}

/** Sorted page addresses as runs of consecutive pages. */
function runsOf(pages: readonly number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const p of pages) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] * PAGE === p) last[1]++;
    else runs.push([p, 1]);
  }
  return runs;
}

/** Where a session's hot pages are kept between its restore and its next checkpoint: in its own directory. */
export function hotPagesPath(dataDir: string, s: { id: string; filesDir?: string }): string {
  return join(sessionPaths(dataDir, s).dir, HOT_PAGES_FILE);
}
