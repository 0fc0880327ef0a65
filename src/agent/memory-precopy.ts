import { closeSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAtSync } from '../util/fs.js';
import { tracerPid } from '../util/proc.js';
import type { MoveFile, StreamDigest } from '../core/checkpoint.js';
import { CHUNK_BYTES, PAGE, chunkBuffers, parentPagemap, type MemoryRun } from '../criu/pagemap.js';
import type { BulkSender } from '../images/bulk-channel.js';
import { hostPidsByVpid, kernelMemoryChoice, mappingsOf, type ListedMapping } from './embedded-memory.js';
import type { HotPages } from './hot-pages.js';
import { SERVER_VPID } from './sandbox.js';

/** A run copied ahead, and where its bytes are in the move's snapshot file. */
export interface CopiedRun extends MemoryRun {
  offset: number;
}

/**
 * The session's memory as a post-copy move copies it ahead of the freeze:
 * each process's runs by its pid in the session, their bytes in `snapshot`
 * (a file: kept in the page cache, not in this agent's heap, where 120 MB
 * of buffers made V8 collect for 20-30 ms in the frozen window and made
 * every `fork` of an `ip` or criu run 15 ms longer).
 */
export interface Precopy {
  runs: Map<number, CopiedRun[]>;
  bytes: number;
  snapshot: string | null;
}

/**
 * Post-copy, on the source before the freeze: which memory to copy ahead,
 * chosen as embedSessionMemory will choose it after the freeze but from the
 * live processes: the server's anonymous memory, and of the kernels' what
 * kernelMemoryChoice takes of their present pages up to `kernelBudget`
 * (their `hot` pages, or their smallest mappings whole); and
 * of every process the pages of its private file mappings written since
 * they were mapped, which criu dumps into the images itself and the move
 * would otherwise send after the freeze (5-6 MB of a session here: its
 * libraries' and interpreters' data). By pid in the session, each process's
 * runs sorted by address; nothing is read yet.
 */
export async function precopyChoice(serverHostPid: number, kernelBudget: number, hot: HotPages = new Map()): Promise<{ hostPids: Map<number, number>; runs: Map<number, MemoryRun[]> }> {
  const hostPids = await hostPidsByVpid(serverHostPid);
  hostPids.set(SERVER_VPID, serverHostPid);
  const mappings = new Map([...hostPids].map(([vpid, hostPid]) => [vpid, mappingsOf(hostPid)]));
  const present = new Map([...hostPids].map(([vpid, hostPid]) => [vpid, presentRuns(hostPid, mappings.get(vpid) ?? [])]));
  const kernels = [...hostPids.keys()].filter((v) => v !== SERVER_VPID);
  const kernelRuns = kernels.flatMap((v) => (present.get(v) ?? []).filter((r) => r.kind === 'anonymous').map((r) => ({ pid: v, vaddr: r.vaddr, bytes: r.bytes })));
  const chosen = kernelMemoryChoice(kernelRuns, mappings, hot, kernelBudget);
  const runs = new Map<number, MemoryRun[]>();
  for (const [vpid, all] of present) {
    const kernel = chosen.filter((r) => r.pid === vpid).map((r): MemoryRun => ({ vaddr: r.vaddr, bytes: r.bytes }));
    const take = vpid === SERVER_VPID ? all : [...all.filter((r) => r.kind === 'written file'), ...kernel].sort((a, b) => a.vaddr - b.vaddr);
    if (take.length > 0) runs.set(vpid, take);
  }
  return { hostPids, runs };
}

/** A run of present pages, and which kind of mapping it lies in (ListedMapping). */
interface PresentRun extends MemoryRun {
  kind: 'anonymous' | 'written file';
}

// /proc/PID/pagemap, each page a little-endian u64; in its last byte: bit 63 present, bit 61 a file's page
// (or shared): clear for a private file mapping's page once written (criu's PME_FILE test).
const PM_PRESENT = 0x80;
const PM_FILE = 0x20;

/**
 * The runs of present pages in a process's private anonymous writable
 * mappings (those a lazy dump leaves lazy) and of written pages in its
 * private file mappings (those it dumps into the images), in address order,
 * from its `mappings` and /proc/PID/pagemap. None when they cannot be read.
 */
function presentRuns(pid: number, mappings: readonly ListedMapping[]): PresentRun[] {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/pagemap`, 'r');
  } catch {
    return [];
  }
  const out: PresentRun[] = [];
  try {
    for (const { start, end, anonymousPrivateWritable, privateFileReadable } of mappings) {
      if (!anonymousPrivateWritable && !privateFileReadable) continue;
      const [kind, mask, want] = anonymousPrivateWritable ? (['anonymous', PM_PRESENT, PM_PRESENT] as const) : (['written file', PM_PRESENT | PM_FILE, PM_PRESENT] as const);
      const pages = (end - start) / PAGE;
      const entries = Buffer.allocUnsafe(pages * 8);
      if (readSync(fd, entries, 0, entries.length, (start / PAGE) * 8) !== entries.length) continue;
      let runStart = -1;
      for (let i = 0; i <= pages; i++) {
        const taken = i < pages && ((entries[i * 8 + 7] as number) & mask) === want;
        if (taken && runStart < 0) runStart = i;
        if (!taken && runStart >= 0) {
          out.push({ vaddr: start + runStart * PAGE, bytes: (i - runStart) * PAGE, kind });
          runStart = -1;
        }
      }
    }
  } catch {
    /* the process went: what was read stands */
  } finally {
    closeSync(fd);
  }
  return out;
}

/**
 * Copies the chosen runs of each process (`hostPids`: by pid in the session)
 * while the session runs: read through the thread pool (100 MB on the
 * agent's own thread held its API up for 0.1 s), kept in `snapshot`, and
 * handed to `send` (one pages image per process, its bytes in pagemap
 * order; a chunk may be reused once the next is asked for). A run that
 * cannot be read whole (unmapped meanwhile) is kept with zeros for what
 * could not be read. Resolves with what was copied, once `send` has had
 * every byte.
 */
export async function copyAhead(
  hostPids: ReadonlyMap<number, number>,
  chosen: ReadonlyMap<number, MemoryRun[]>,
  snapshot: string,
  send: (vpid: number, pages: AsyncIterable<Buffer>) => Promise<void>,
): Promise<Precopy> {
  const out: Precopy = { runs: new Map(), bytes: 0, snapshot };
  const file = openSync(snapshot, 'w', 0o600);
  const buf = chunkBuffers.take();
  try {
    for (const [vpid, runs] of chosen) {
      const hostPid = hostPids.get(vpid);
      if (hostPid === undefined) continue;
      let mem: FileHandle;
      try {
        mem = await open(`/proc/${hostPid}/mem`, 'r');
      } catch {
        continue;
      }
      const copied: CopiedRun[] = [];
      // The pages image in pagemap order: each run read into the buffer, the buffer sent (and kept) when full.
      async function* pages(): AsyncGenerator<Buffer> {
        let filled = 0;
        const flush = (): Buffer => {
          writeAtSync(file, buf.subarray(0, filled), out.bytes);
          out.bytes += filled;
          const chunk = buf.subarray(0, filled);
          filled = 0;
          return chunk;
        };
        for (const r of runs) {
          copied.push({ vaddr: r.vaddr, bytes: r.bytes, offset: out.bytes + filled });
          let readable = true;
          for (let got = 0; got < r.bytes; ) {
            const n = Math.min(CHUNK_BYTES - filled, r.bytes - got);
            // Unmapped while it was copied: the rest of the run is zeros here, and differs from the frozen memory
            // (or cannot be read there, and nothing is taken from the copy).
            if (readable) readable = (await mem.read(buf, filled, n, r.vaddr + got).catch(() => ({ bytesRead: 0 }))).bytesRead === n;
            if (!readable) buf.fill(0, filled, filled + n);
            filled += n;
            got += n;
            if (filled === CHUNK_BYTES) yield flush();
          }
        }
        if (filled > 0) yield flush();
      }
      try {
        await send(vpid, pages());
      } finally {
        await mem.close().catch(() => undefined);
      }
      if (copied.length > 0) out.runs.set(vpid, copied);
    }
  } finally {
    closeSync(file);
    chunkBuffers.giveBack(buf);
  }
  return out;
}

/**
 * Sends the session's memory ahead on the move's bulk channel as a parent
 * image directory (images/parent/: per process, pages-PID.img and then
 * pagemap-PID.img naming what was copied), which criu restore reads the
 * PE_PARENT entries from. Resolves, once every byte is handed to the
 * socket, with what was copied and the files for the manifest.
 */
export async function sendAhead(bulk: BulkSender, hostPids: ReadonlyMap<number, number>, chosen: ReadonlyMap<number, MemoryRun[]>, snapshot: string): Promise<{ precopy: Precopy; files: MoveFile[] }> {
  const files: MoveFile[] = [];
  const named = (name: string, digest: StreamDigest): MoveFile => ({ name, ...digest, mode: 0o600 });
  const precopy = await copyAhead(hostPids, chosen, snapshot, async (vpid, pages) => {
    files.push(named(`images/parent/pages-${vpid}.img`, await bulk.file(`images/parent/pages-${vpid}.img`, pages)));
  });
  // Only for the processes copied: a pagemap naming a pages image that never came would fail criu restore.
  for (const [vpid, runs] of precopy.runs) {
    const name = `images/parent/pagemap-${vpid}.img`;
    files.push(named(name, await bulk.file(name, once(parentPagemap(vpid, runs)))));
  }
  return { precopy, files };
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

/** Where a move keeps its copy ahead: in the agent's work directory, removed when the move ends. */
export function snapshotPath(workDir: string, sessionId: string): string {
  return join(workDir, `ahead-${sessionId}-${Date.now().toString(36)}.bin`);
}

/** Removes the copies ahead a dead agent's moves left in `workDir` (none can still be in use at the agent's start). */
export async function removeLeftCopies(workDir: string): Promise<string[]> {
  const left = (await readdir(workDir).catch(() => [])).filter((n) => /^ahead-.*\.bin$/.test(n));
  await Promise.all(left.map((n) => rm(join(workDir, n), { force: true })));
  return left;
}

/** Pages of the copy ahead that the frozen session has changed since, by pid in the session: their addresses. */
export type ChangedPages = Map<number, Set<number>>;

/**
 * Watches a dump that criu has just started freeze the session: polls every
 * 2 ms until every thread of every process in `pids` (those gone are left
 * out) is in a ptrace stop under `criuPid`. Resolves with the time
 * (performance.now()) of the last poll that found none of them stopped: the
 * session ran until then, and criu seizes them all within a millisecond or
 * two of each other. `since` (criu's start) when the first poll already
 * found one stopped; null when the freeze is not seen within `timeoutMs` or
 * before `stop` settles.
 */
export async function frozenBy(pids: readonly number[], criuPid: number, opts: { since: number; stop: Promise<unknown>; timeoutMs: number }): Promise<number | null> {
  let settled = false;
  void opts.stop.then(
    () => (settled = true),
    () => (settled = true),
  );
  const deadline = performance.now() + opts.timeoutMs;
  let running = opts.since;
  for (;;) {
    const polled = performance.now();
    const seen = pids.map((pid) => threadsStoppedBy(pid, criuPid)).filter((s) => s !== null);
    if (seen.every((s) => s.all)) return running;
    if (seen.every((s) => s.none)) running = polled;
    if (settled || performance.now() > deadline) return null;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * The pages of the copy ahead that differ from the session's memory now,
 * read from its processes and from the snapshot chunk by chunk. Only once
 * the session is frozen: a page compared equal and written after would be
 * restored stale. Given `frozen` (frozenBy's watch of the dump) it waits for
 * that, so that it can run while criu dumps (0.1 s for 120 MB beside criu's
 * 0.15 s, where it took 0.1 s after the dump). null when the freeze was not
 * seen, or when a process or the snapshot cannot be read (the move then
 * sends all that memory after the freeze).
 */
export async function changedSinceCopy(p: Precopy, hostPids: ReadonlyMap<number, number>, frozen?: Promise<number | null>): Promise<ChangedPages | null> {
  if (p.runs.size === 0 || p.snapshot === null) return new Map();
  const pids = [...p.runs.keys()].map((v) => hostPids.get(v));
  if (pids.some((x) => x === undefined)) return null;
  if (frozen && (await frozen) === null) return null;
  const out: ChangedPages = new Map();
  let sinceTurn = 0;
  let snapshot: number;
  try {
    snapshot = openSync(p.snapshot, 'r');
  } catch {
    return null;
  }
  const now = chunkBuffers.take();
  const then = chunkBuffers.take();
  try {
    for (const [vpid, runs] of p.runs) {
      const changed = new Set<number>();
      let mem: number;
      try {
        mem = openSync(`/proc/${hostPids.get(vpid) as number}/mem`, 'r');
      } catch {
        return null;
      }
      try {
        for (const r of runs) {
          for (let off = 0; off < r.bytes; off += CHUNK_BYTES) {
            const n = Math.min(CHUNK_BYTES, r.bytes - off);
            if (readSync(mem, now, 0, n, r.vaddr + off) !== n || readSync(snapshot, then, 0, n, r.offset + off) !== n) return null;
            if (!now.subarray(0, n).equals(then.subarray(0, n))) {
              for (let k = 0; k < n; k += PAGE) if (!now.subarray(k, k + PAGE).equals(then.subarray(k, k + PAGE))) changed.add(r.vaddr + off + k);
            }
            // criu's answer and the agent's API are not held up behind 100 MB of comparing; but not a turn of the
            // event loop a run either: a process's written file pages lie in hundreds of runs of a page or two.
            sinceTurn += n;
            if (sinceTurn >= CHUNK_BYTES) {
              sinceTurn = 0;
              await new Promise((resolve) => setImmediate(resolve));
            }
          }
        }
      } catch {
        return null;
      } finally {
        closeSync(mem);
      }
      out.set(vpid, changed);
    }
  } finally {
    closeSync(snapshot);
    chunkBuffers.giveBack(now, then);
  }
  return out;
}

/** Whether all, or none, of the threads of `pid` are in a ptrace stop under `tracer`; null when the process is gone. */
function threadsStoppedBy(pid: number, tracer: number): { all: boolean; none: boolean } | null {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let stopped = 0;
  for (const tid of tids) {
    let status = '';
    try {
      status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      /* a thread that ended meanwhile: not stopped */
    }
    if (/^State:\s+t\b/m.test(status) && tracerPid(status) === tracer) stopped++;
  }
  return { all: stopped === tids.length, none: stopped === 0 };
}
