import { readFile, writeFile } from 'node:fs/promises';
import { CriuError } from '../core/errors.js';

export const PIPE_MAX_SIZE_FILE = '/proc/sys/fs/pipe-max-size';

/**
 * The pipe size criu asks for: its PIPE_MAX_SIZE (8 pages of pipe_buffer
 * structs, 819 pages) rounded up by the kernel to a power of two, 4 MiB.
 */
export const CRIU_PIPE_BYTES = 4 * 1024 * 1024;

/**
 * Why post-copy failed here until this was known: criu's lazy page server
 * tee()s a page pipe of up to 4 MiB into a pipe it grows with F_SETPIPE_SZ.
 * Above fs.pipe-max-size (1 MiB by default) that grow needs CAP_SYS_RESOURCE,
 * which root lacks in a container or this VM; criu 4.2.1 ignores the failed
 * grow, the tee then moves only 64 KiB, and the dump fails with
 * "page-pipe: tee: 65536: Operation not permitted" (a stale errno).
 * Raising the sysctl to 4 MiB lets the grow succeed without the capability.
 */
export async function readPipeMaxSize(file = PIPE_MAX_SIZE_FILE): Promise<number> {
  const n = Number((await readFile(file, 'utf8')).trim());
  if (!Number.isInteger(n) || n <= 0) throw new CriuError('criu_unavailable', `${file} does not hold a size`, 'unreadable sysctl');
  return n;
}

/**
 * Raises fs.pipe-max-size to what criu's lazy pages need, when it is lower.
 * Returns the value before and after. Never lowers it. Throws a CriuError
 * that says what to run when it cannot be written (not root).
 */
export async function ensurePipeMaxSize(file = PIPE_MAX_SIZE_FILE): Promise<{ before: number; after: number }> {
  const before = await readPipeMaxSize(file);
  if (before >= CRIU_PIPE_BYTES) return { before, after: before };
  try {
    await writeFile(file, String(CRIU_PIPE_BYTES));
  } catch (err) {
    throw new CriuError(
      'criu_unavailable',
      `fs.pipe-max-size is ${before} bytes and could not be raised to ${CRIU_PIPE_BYTES} (${(err as Error).message}); criu's post-copy page server needs it: run 'sysctl fs.pipe-max-size=${CRIU_PIPE_BYTES}' as root`,
      'pipe-max-size too small',
    );
  }
  return { before, after: await readPipeMaxSize(file) };
}
