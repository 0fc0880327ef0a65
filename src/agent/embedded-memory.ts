import { readFile } from 'node:fs/promises';
import { embedLazyMemory, lazyRuns, type EmbeddedPages, type LazyRun } from '../criu/pagemap.js';
import { processTree } from '../util/proc.js';
import { SERVER_VPID } from './sandbox.js';

/**
 * Post-copy, on the source once the lazy dump is ready: which of the
 * session's memory goes with the images instead of being fetched on the
 * target page by page. The server's, all of it (its first answer would
 * otherwise fault behind chunks of the kernels' memory). Of the kernels',
 * the smallest runs first, up to `kernelBudget` bytes: an interpreter's own
 * working memory (its object arenas, thread stacks, libraries' data) lies in
 * many small runs that its first execute touches here and there, a
 * session's data in a few large ones that it may never touch again.
 * A process whose memory cannot be read keeps it lazy, its images
 * untouched (embedLazyMemory changes nothing then); `skipped` says why.
 */
export async function embedSessionMemory(
  imagesDir: string,
  serverHostPid: number,
  kernelBudget: number,
  skipped: (vpid: number, err: unknown) => void,
): Promise<EmbeddedPages[]> {
  const hostPids = await hostPidsByVpid(serverHostPid);
  hostPids.set(SERVER_VPID, serverHostPid);
  const others = [...hostPids.keys()].filter((v) => v !== SERVER_VPID);
  const runs = (await Promise.all(others.map((v) => lazyRuns(imagesDir, v).catch(() => [])))).flat();
  const chosen = smallestRuns(runs, kernelBudget);
  const out: EmbeddedPages[] = [];
  for (const [vpid, hostPid] of hostPids) {
    const take = vpid === SERVER_VPID ? undefined : (r: LazyRun): boolean => chosen.has(runKey(r));
    try {
      const e = await embedLazyMemory(imagesDir, vpid, hostPid, take);
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

/** The smallest runs whose bytes add up to at most `budget`. */
export function smallestRuns(runs: LazyRun[], budget: number): Set<string> {
  const out = new Set<string>();
  let left = budget;
  for (const r of [...runs].sort((a, b) => a.bytes - b.bytes)) {
    if (r.bytes > left) break;
    out.add(runKey(r));
    left -= r.bytes;
  }
  return out;
}

/** The session's processes by their pid in its namespace (criu names their images by it), to their pid here. */
async function hostPidsByVpid(serverHostPid: number): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of await processTree(serverHostPid)) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    const vpid = Number(ns?.at(-1));
    if (Number.isInteger(vpid) && vpid > 0) out.set(vpid, pid);
  }
  return out;
}
