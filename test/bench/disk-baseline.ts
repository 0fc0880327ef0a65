import { randomBytes } from 'node:crypto';
import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HUGE_PAGE_BUFFERS_PY } from '../../src/images/page-capture.js';
import { run } from '../../src/util/exec.js';

/** Drops the page cache so reads come from the disk, as a restore after a while would. */
export async function dropCaches(): Promise<void> {
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

export interface DiskBaseline {
  bytes: number;
  writeSeconds: number;
  readSeconds: number;
  writeBytesPerSecond: number;
  readBytesPerSecond: number;
}

/**
 * The best of `runs` measurements: on a VM the first touch of fresh memory for
 * the page cache can slow a first run several-fold, and the checkpoint rounds
 * it is compared with get a warm-up too.
 */
export async function measureDiskBest(dir: string, bytes: number, runs = 2): Promise<DiskBaseline> {
  let best: DiskBaseline | undefined;
  for (let i = 0; i < runs; i++) {
    const m = await measureDisk(dir, bytes);
    best = best
      ? { ...best, writeSeconds: Math.min(best.writeSeconds, m.writeSeconds), readSeconds: Math.min(best.readSeconds, m.readSeconds) }
      : m;
  }
  const b = best as DiskBaseline;
  return { ...b, writeBytesPerSecond: bytes / b.writeSeconds, readBytesPerSecond: bytes / b.readSeconds };
}

/**
 * The baseline in cold guest memory: the same write and read, started once
 * this VM's balloon has had time to take back the memory just freed (free
 * page reporting, about 2 s; see README). A checkpoint writes its image
 * into memory in that state, the best-of-two baseline into memory the run
 * before it has just freed.
 */
export function measureDiskCold(dir: string, bytes: number): Promise<DiskBaseline> {
  return measureDisk(dir, bytes, { settleMs: 6_000 });
}

/**
 * A plain sequential write of `bytes` incompressible bytes to `path` in 4 MiB
 * writes (like criu's and the stores' own), fsynced. Seconds. The caller
 * drops the page cache first.
 */
async function writeFileTimed(path: string, bytes: number): Promise<number> {
  const chunk = randomBytes(4 << 20);
  const w0 = performance.now();
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < bytes; done += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - done));
    await fh.sync();
  } finally {
    await fh.close();
  }
  return (performance.now() - w0) / 1000;
}

/**
 * The page-cache write baseline beside one checkpoint: measureDiskBest's
 * write, the better of two, taken right before it, so that the ratio of each
 * round is not moved by the disk's drift over a run (on this VM its pace
 * moves by a third within an hour). The better of two as there: a single
 * write's fresh page cache costs more or less by how warm the memory it
 * gets is. Seconds.
 */
export async function measureDiskWrite(dir: string, bytes: number, runs = 2): Promise<number> {
  const path = join(dir, `baseline-beside-${process.pid}.bin`);
  let best = Infinity;
  try {
    for (let i = 0; i < runs; i++) {
      await dropCaches();
      best = Math.min(best, await writeFileTimed(path, bytes));
    }
    return best;
  } finally {
    await rm(path, { force: true });
  }
}

/**
 * The physical baseline: a plain sequential write of `bytes` incompressible
 * bytes to a file in `dir`, fsynced, then a read of it with the page cache
 * dropped (writeFileTimed).
 */
export async function measureDisk(dir: string, bytes: number, opts: { settleMs?: number } = {}): Promise<DiskBaseline> {
  const path = join(dir, `baseline-${process.pid}.bin`);
  await dropCaches();
  if (opts.settleMs) await new Promise((resolve) => setTimeout(resolve, opts.settleMs));
  const writeSeconds = await writeFileTimed(path, bytes);
  await dropCaches();
  const r0 = performance.now();
  const rh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    while ((await rh.read(buf, 0, buf.length)).bytesRead > 0);
  } finally {
    await rh.close();
  }
  const readSeconds = (performance.now() - r0) / 1000;
  await rm(path, { force: true });
  return { bytes, writeSeconds, readSeconds, writeBytesPerSecond: bytes / writeSeconds, readBytesPerSecond: bytes / readSeconds };
}

/**
 * The disk's own write throughput, past the guest's page cache: `bytes`
 * written with O_DIRECT in 16 MiB pieces from one reused buffer in
 * transparent huge pages (where the kernel gives them; 4 MiB requests
 * instead of one segment a page), then fdatasync. This is how the agent's
 * page capture writes a checkpoint's memory (src/images/page-capture.ts).
 * Node cannot align a buffer, so Python writes. Seconds.
 */
export async function measureDiskDirectWrite(dir: string, bytes: number): Promise<number> {
  const path = join(dir, `baseline-direct-${process.pid}.bin`);
  const py = `
import mmap, os, sys, time
path, total, piece = sys.argv[1], int(sys.argv[2]), 16 << 20
${HUGE_PAGE_BUFFERS_PY}
[buf] = huge_page_buffers(1, piece)
buf[:] = os.urandom(piece)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
t = time.perf_counter()
at = 0
while at < total:
    n = min(piece, total - at)
    n -= n % 4096
    if n == 0:
        break
    os.pwrite(fd, buf[:n], at)
    at += n
os.fdatasync(fd)
print(time.perf_counter() - t)
`;
  try {
    const { stdout } = await run('/usr/bin/python3', ['-I', '-S', '-c', py, path, String(bytes)], { timeoutMs: 300_000 });
    return Number(stdout.trim());
  } finally {
    await rm(path, { force: true });
  }
}
