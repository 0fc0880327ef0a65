import { readFileSync } from 'node:fs';
import { PAGE, embedLazyMemory, lazyRuns, pageRunsIn, splitLazyRuns, type EmbeddedPages, type LazyRun, type MemoryRun } from '../criu/pagemap.js';
import { processTree } from '../util/proc.js';
import type { HotPages } from './hot-pages.js';
import { SERVER_VPID } from './sandbox.js';

/**
 * Post-copy, on the source once the lazy dump is ready: which of the
 * session's memory goes with the images instead of being fetched on the
 * target page by page. The server's, all of it (its first answer would
 * otherwise fault behind chunks of the kernels' memory). Of the kernels',
 * up to `kernelBudget` bytes, as kernelMemoryChoice chooses: their hot
 * pages where `hot` has some (their pagemap entries split around them),
 * else their smallest mappings.
 * A process whose memory cannot be read keeps it lazy, its images
 * untouched (embedLazyMemory changes nothing then); `skipped` says why.
 * `parent`: the memory copied before the freeze and sent ahead, by pid in
 * the session, and its pages found changed since (memory-precopy.ts): what
 * is unchanged of it is not sent again.
 */
export async function embedSessionMemory(
  imagesDir: string,
  serverHostPid: number,
  kernelBudget: number,
  skipped: (vpid: number, err: unknown) => void,
  parent: { runs: ReadonlyMap<number, readonly MemoryRun[]>; changed: ReadonlyMap<number, ReadonlySet<number>> } = { runs: new Map(), changed: new Map() },
  hot: HotPages = new Map(),
): Promise<EmbeddedPages[]> {
  const hostPids = await hostPidsByVpid(serverHostPid);
  hostPids.set(SERVER_VPID, serverHostPid);
  const others = [...hostPids.keys()].filter((v) => v !== SERVER_VPID);
  for (const v of others) {
    const pages = hot.get(v);
    try {
      if (pages) splitLazyRuns(imagesDir, v, pages);
    } catch {
      /* unreadable: embedLazyMemory below says so, or the process's memory stays lazy */
    }
  }
  const runs = (await Promise.all(others.map((v) => lazyRuns(imagesDir, v).catch(() => [])))).flat();
  const mappings = new Map(others.map((v) => [v, mappingsOf(hostPids.get(v) as number)]));
  const chosen = new Set(kernelMemoryChoice(runs, mappings, hot, kernelBudget).map(runKey));
  const out: EmbeddedPages[] = [];
  for (const [vpid, hostPid] of hostPids) {
    const take = vpid === SERVER_VPID ? undefined : (r: LazyRun): boolean => chosen.has(runKey(r));
    try {
      const runs = parent.runs.get(vpid);
      const changed = parent.changed.get(vpid);
      const e = await embedLazyMemory(imagesDir, vpid, hostPid, take, runs && changed ? { runs, changed } : undefined);
      if (e) out.push(e);
    } catch (err) {
      skipped(vpid, err);
    }
  }
  return out;
}

function runKey(r: LazyRun): string {
  return `${r.pid}:${r.vaddr}`;
}

/** A mapping of a process's memory: [start, end). */
export interface Mapping {
  start: number;
  end: number;
}

/** A mapping as /proc/PID/maps lists it, and which of the kinds a dump treats apart it is. */
export interface ListedMapping extends Mapping {
  /** Private, anonymous and writable: what a lazy dump leaves lazy. */
  anonymousPrivateWritable: boolean;
  /**
   * Private, of a file, readable: its pages written since it was mapped (copied on write, no longer the file's)
   * are dumped into the images, never lazy: a library's data, an interpreter's own.
   */
  privateFileReadable: boolean;
}

/** A process's mappings, from /proc/PID/maps (read synchronously: the session is frozen meanwhile); none when it cannot be read. */
export function mappingsOf(pid: number): ListedMapping[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return [];
  }
  const out: ListedMapping[] = [];
  for (const line of text.split('\n')) {
    // start-end perms offset dev inode [path]
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)/.exec(line);
    if (!m) continue;
    const perms = m[3] as string;
    const [priv, file] = [perms[3] === 'p', m[4] !== '0'];
    out.push({
      start: parseInt(m[1] as string, 16),
      end: parseInt(m[2] as string, 16),
      anonymousPrivateWritable: perms.startsWith('rw') && priv && !file,
      privateFileReadable: perms.startsWith('r') && priv && file,
    });
  }
  return out;
}

/**
 * Every run of the mappings with the least lazy memory, mapping by mapping,
 * up to `budget` bytes: a mapping is taken whole or not at all. Runs in no
 * known mapping stay lazy.
 */
export function smallestMappings(runs: LazyRun[], mappings: ReadonlyMap<number, Mapping[]>, budget: number): Set<string> {
  const groups = new Map<string, { bytes: number; runs: LazyRun[] }>();
  for (const r of runs) {
    const m = mappingAt(mappings.get(r.pid) ?? [], r.vaddr);
    if (!m) continue;
    const key = `${r.pid}:${m.start}`;
    const g = groups.get(key) ?? { bytes: 0, runs: [] };
    g.bytes += r.bytes;
    g.runs.push(r);
    groups.set(key, g);
  }
  const out = new Set<string>();
  let left = budget;
  for (const g of [...groups.values()].sort((a, b) => a.bytes - b.bytes)) {
    if (g.bytes > left) break;
    for (const r of g.runs) out.add(runKey(r));
    left -= g.bytes;
  }
  return out;
}

/**
 * Which of the kernels' memory (`runs`, of every process) goes with a
 * post-copy move's images, up to `budget` bytes. Of a process that `hot`
 * names (the pages it asked for first after its last lazy restore or move,
 * hot-pages.ts), those pages that lie in its runs, as runs of their own:
 * a few MB that its first execute would otherwise fetch page by page over
 * the network, where its smallest mappings are ~50 MB of which it touches a
 * tenth. Of the others (and of one none of whose hot pages it still
 * has), whole mappings, those with the least memory first
 * (smallestMappings), within what the hot pages leave of the budget.
 */
export function kernelMemoryChoice(runs: readonly LazyRun[], mappings: ReadonlyMap<number, Mapping[]>, hot: HotPages, budget: number): LazyRun[] {
  const out: LazyRun[] = [];
  // The processes whose record names pages they still have: a pid the record names may be another process by now.
  const recorded = new Set<number>();
  let left = budget - (budget % PAGE);
  for (const [pid, pages] of hot) {
    for (const r of runs.filter((x) => x.pid === pid).sort((x, y) => x.vaddr - y.vaddr)) {
      for (const h of pageRunsIn(pages, r.vaddr, r.vaddr + r.bytes)) {
        recorded.add(pid);
        const bytes = Math.min(h.pages * PAGE, left);
        if (bytes > 0) out.push({ pid, vaddr: h.vaddr, bytes });
        left -= bytes;
      }
    }
  }
  const others = runs.filter((r) => !recorded.has(r.pid));
  const whole = smallestMappings(others, mappings, left);
  return [...out, ...others.filter((r) => whole.has(runKey(r)))];
}

/** The mapping holding `addr`, of mappings in ascending order (as /proc/PID/maps lists them). */
function mappingAt(sorted: Mapping[], addr: number): Mapping | undefined {
  let [lo, hi] = [0, sorted.length - 1];
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = sorted[mid] as Mapping;
    if (addr < m.start) hi = mid - 1;
    else if (addr >= m.end) lo = mid + 1;
    else return m;
  }
  return undefined;
}

/** The session's processes by their pid in its namespace (criu names their images by it), to their pid here. */
export async function hostPidsByVpid(serverHostPid: number): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of await processTree(serverHostPid)) {
    let status = '';
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      /* gone: not the session's any more */
    }
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    const vpid = Number(ns?.at(-1));
    if (Number.isInteger(vpid) && vpid > 0) out.set(vpid, pid);
  }
  return out;
}
