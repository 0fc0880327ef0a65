import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { MoveFile } from '../core/checkpoint.js';
import { parentPagemap, type PrecopiedRun } from '../criu/pagemap.js';
import type { BulkSender } from '../images/bulk-channel.js';
import { hostPidsByVpid, mappingsOf, smallestMappings } from './embedded-memory.js';
import { SERVER_VPID } from './sandbox.js';

const PAGE = 4096;
/** Frames of this many bytes at most on the bulk channel. */
const FRAME_BYTES = 4 << 20;

/** The session's memory as copied before a post-copy move's freeze: each process's runs by its pid in the session. */
export interface Precopy {
  runs: Map<number, PrecopiedRun[]>;
  bytes: number;
}

/**
 * Post-copy, on the source before the freeze: a copy of the memory the move
 * sends eagerly, chosen as embedSessionMemory will choose it after the
 * freeze but from the live processes: the server's anonymous memory, and of
 * the kernels' the mappings with the least of it present, whole, up to
 * `kernelBudget`. The session runs meanwhile: a page that changes after it
 * was read differs at the freeze and is sent again then (embedLazyMemory
 * compares every page). A run that cannot be read is left out.
 */
export async function precopySessionMemory(serverHostPid: number, kernelBudget: number): Promise<Precopy> {
  const hostPids = await hostPidsByVpid(serverHostPid);
  hostPids.set(SERVER_VPID, serverHostPid);
  const present = new Map([...hostPids].map(([vpid, hostPid]) => [vpid, presentAnonymousRuns(hostPid)]));
  const kernels = [...hostPids.keys()].filter((v) => v !== SERVER_VPID);
  const kernelRuns = kernels.flatMap((v) => (present.get(v) ?? []).map((r) => ({ pid: v, vaddr: r.vaddr, bytes: r.bytes })));
  const chosen = smallestMappings(kernelRuns, new Map(kernels.map((v) => [v, mappingsOf(hostPids.get(v) as number)])), kernelBudget);
  const runs = new Map<number, PrecopiedRun[]>();
  let bytes = 0;
  for (const [vpid, hostPid] of hostPids) {
    const take = (present.get(vpid) ?? []).filter((r) => vpid === SERVER_VPID || chosen.has(`${vpid}:${r.vaddr}`));
    const copied = await copyRuns(hostPid, take);
    if (copied.length === 0) continue;
    runs.set(vpid, copied);
    bytes += copied.reduce((a, r) => a + r.data.length, 0);
  }
  return { runs, bytes };
}

/**
 * The runs of present pages in a process's private anonymous writable
 * mappings (those a lazy dump leaves lazy), from /proc/PID/maps and
 * /proc/PID/pagemap (bit 63: present). None when they cannot be read.
 */
function presentAnonymousRuns(pid: number): { vaddr: number; bytes: number }[] {
  let maps: string;
  let fd: number;
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    fd = openSync(`/proc/${pid}/pagemap`, 'r');
  } catch {
    return [];
  }
  const out: { vaddr: number; bytes: number }[] = [];
  try {
    for (const line of maps.split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)/.exec(line);
      if (!m || !(m[3] as string).startsWith('rw') || (m[3] as string)[3] !== 'p' || m[4] !== '0') continue;
      const start = parseInt(m[1] as string, 16);
      const pages = (parseInt(m[2] as string, 16) - start) / PAGE;
      const entries = Buffer.allocUnsafe(pages * 8);
      if (readSync(fd, entries, 0, entries.length, (start / PAGE) * 8) !== entries.length) continue;
      let runStart = -1;
      for (let i = 0; i <= pages; i++) {
        const isPresent = i < pages && ((entries[i * 8 + 7] as number) & 0x80) !== 0;
        if (isPresent && runStart < 0) runStart = i;
        if (!isPresent && runStart >= 0) {
          out.push({ vaddr: start + runStart * PAGE, bytes: (i - runStart) * PAGE });
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
 * The runs' bytes read from the process's memory; a run that cannot be read
 * whole is left out. Through the thread pool: the session still runs, and
 * 100 MB read on the agent's own thread held its API up for 0.1 s.
 */
async function copyRuns(pid: number, runs: { vaddr: number; bytes: number }[]): Promise<PrecopiedRun[]> {
  if (runs.length === 0) return [];
  let mem: FileHandle;
  try {
    mem = await open(`/proc/${pid}/mem`, 'r');
  } catch {
    return [];
  }
  const out: PrecopiedRun[] = [];
  try {
    for (const r of runs) {
      const data = Buffer.allocUnsafeSlow(r.bytes);
      let got = 0;
      try {
        while (got < r.bytes) {
          const { bytesRead } = await mem.read(data, got, r.bytes - got, r.vaddr + got);
          if (bytesRead <= 0) break;
          got += bytesRead;
        }
      } catch {
        /* unmapped meanwhile */
      }
      if (got === r.bytes) out.push({ vaddr: r.vaddr, data });
    }
  } finally {
    await mem.close().catch(() => undefined);
  }
  return out;
}

/**
 * Sends the copy on the move's bulk channel as a parent image directory
 * (images/parent/: per process, pagemap-PID.img and pages-PID.img), which
 * criu restore reads the PE_PARENT entries from. Resolves once every byte
 * is handed to the socket, with the files for the manifest.
 */
export async function sendPrecopy(bulk: BulkSender, p: Precopy): Promise<MoveFile[]> {
  const files: Promise<MoveFile>[] = [];
  for (const [vpid, runs] of p.runs) {
    const named = (name: string) => (digest: Awaited<ReturnType<BulkSender['file']>>): MoveFile => ({ name, ...digest, mode: 0o600 });
    const pagemap = `images/parent/pagemap-${vpid}.img`;
    const pages = `images/parent/pages-${vpid}.img`;
    files.push(bulk.file(pagemap, once(parentPagemap(vpid, runs))).then(named(pagemap)));
    files.push(bulk.file(pages, framed(runs)).then(named(pages)));
  }
  return Promise.all(files);
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

async function* framed(runs: readonly PrecopiedRun[]): AsyncGenerator<Buffer> {
  for (const r of runs) for (let at = 0; at < r.data.length; at += FRAME_BYTES) yield r.data.subarray(at, at + FRAME_BYTES);
}
