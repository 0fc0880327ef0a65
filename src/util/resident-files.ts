import { accessSync, constants, realpathSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { errorMessage } from '../core/errors.js';
import { run } from './exec.js';
import { PythonHelper } from './python-helper.js';

/**
 * Keeps files in memory: a small Python process maps each one read-only and
 * locks it (mlock) for as long as it runs, so that the kernel neither drops
 * those pages with the page cache nor reclaims them under memory pressure.
 *
 * Why: criu is a 6 MB executable with 14 libraries (10 MB). Read from disk,
 * as on a node whose memory the sessions have filled, or after the page
 * cache was dropped, it took 16-25 ms from its spawn to its log's first line
 * inside a checkpoint, against 11-17 ms held here (medians 21 and 13 ms;
 * 2026-12-05, a 256 MiB kernel's checkpoints alternated): time before the
 * first page is written, and inside a move's frozen window. The same holds
 * for the commands a checkpoint or move runs beside criu (ip, nsenter) and
 * for the hasher a restore verifies with.
 *
 * The helper prints one JSON line once every file is locked, then waits
 * until its stdin closes (its parent has gone) and exits.
 */
const RESIDENT_PY = `
import ctypes, json, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
failed = ctypes.c_void_p(-1).value
locked, errors = 0, []
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        errors.append(f'{path}: {e.strerror}')
        continue
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            continue
        # Shared and read-only: the locked pages are the page cache's own, not private copies.
        at = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if at is None or at == failed:
            errors.append(f'{path}: mmap: {os.strerror(ctypes.get_errno())}')
            continue
        if libc.mlock(ctypes.c_void_p(at), size) != 0:
            errors.append(f'{path}: mlock: {os.strerror(ctypes.get_errno())}')
            continue
        locked += size
    finally:
        os.close(fd)
sys.stdout.write(json.dumps({'locked': locked, 'errors': errors}) + '\\n')
sys.stdout.flush()
sys.stdin.read()
`;

const ResidentReport = z.object({ locked: z.number().int().nonnegative(), errors: z.array(z.string()) });

/** What a ResidentFiles helper locked: its bytes, and each file it could not lock, with why. */
export type ResidentReport = z.infer<typeof ResidentReport>;

export class ResidentFilesError extends Error {
  override readonly name = 'ResidentFilesError';
}

/** Files held in memory by a helper process until close(). */
export class ResidentFiles {
  private constructor(
    private readonly helper: PythonHelper,
    readonly report: ResidentReport,
  ) {}

  /** The helper's pid: its /proc/PID/status counts the locked bytes (VmLck). */
  get pid(): number | undefined {
    return this.helper.child.pid;
  }

  /**
   * Maps and locks `paths` (which should be unique: a file named twice is
   * locked twice over). Resolves once the helper has locked what it could
   * (report.errors names the rest); rejects when the helper fails or says
   * nothing within `timeoutMs`.
   */
  static async start(paths: readonly string[], timeoutMs = 30_000): Promise<ResidentFiles> {
    const helper = new PythonHelper(RESIDENT_PY, paths);
    const lines = createInterface({ input: helper.child.stdout as NodeJS.ReadableStream });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new ResidentFilesError(`the helper locking ${paths.length} files said nothing in ${timeoutMs / 1000} s`)), timeoutMs);
        lines.once('line', (l) => {
          clearTimeout(timer);
          resolve(l);
        });
        helper.child.once('close', (code, signal) => {
          clearTimeout(timer);
          reject(new ResidentFilesError(`the helper locking files in memory ended (${signal ?? `exit ${code}`}) before it said what it locked: ${helper.error?.message ?? helper.lastWords}`));
        });
      });
      const report = ResidentReport.parse(JSON.parse(line));
      return new ResidentFiles(helper, report);
    } catch (err) {
      helper.child.kill('SIGKILL');
      throw err instanceof ResidentFilesError ? err : new ResidentFilesError(`the helper locking files in memory answered what cannot be read: ${errorMessage(err)}`);
    } finally {
      lines.close();
    }
  }

  /** Unlocks the files (the helper ends). Safe to call twice. */
  close(): void {
    if (this.helper.usable) this.helper.child.kill('SIGKILL');
  }
}

/** `command`'s path: itself when it has a slash, else the first executable of that name on PATH; null when none. */
export function commandPath(command: string, path = process.env.PATH ?? ''): string | null {
  if (command.includes('/')) return command;
  for (const dir of path.split(delimiter).filter((d) => isAbsolute(d))) {
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

/**
 * The files runs of the executables at `paths` map from disk: each one, its
 * loader and its shared libraries (as one `ldd` run lists them: about 0.1 s
 * for criu, ip, nsenter and the piece hasher on a quiet machine here), as
 * real paths, each once (executables share their libc, their loader,
 * ...). A static executable, or one ldd cannot read, is just itself.
 */
export async function filesOfExecutables(paths: readonly string[]): Promise<string[]> {
  if (paths.length === 0) return [];
  const { stdout } = await run('ldd', [...paths], { allowFailure: true, timeoutMs: 10_000 });
  // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no
  // file, a library not found has no address. With several paths ldd heads each one's list with "PATH:".
  const libraries = [...stdout.matchAll(/(?:=>\s*|^\s+)(\/\S+)\s+\(0x[0-9a-f]+\)/gm)].map((m) => m[1] as string);
  return [...new Set([...paths, ...libraries].map((p) => realpathSync(p)))];
}
