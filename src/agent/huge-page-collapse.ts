import type { Logger } from 'pino';
import { z } from 'zod';
import { errorMessage } from '../core/errors.js';
import { run } from '../util/exec.js';
import { PYTHON, pythonScriptArgs } from '../util/proc.js';

/**
 * The environment setting that makes a session's glibc ask for transparent
 * huge pages (madvise MADV_HUGEPAGE) for the memory it maps for large
 * allocations and its heap: a kernel's arrays and big objects then lie in
 * 2 MiB pages where the kernel's mode is `madvise`. criu reads a session's
 * mappings (/proc/PID/smaps) and its page map, and splices its pages into
 * pipes, a page table entry at a time: for a 1 GiB kernel here 25, 35 and
 * 45 ms of a post-copy move's frozen window in 4 KiB pages, 8, 15 and 27 ms
 * in huge pages (criu's log timestamps; ready 135 ms after its start
 * instead of 207).
 */
export const HUGE_PAGE_MALLOC_TUNABLE = 'glibc.malloc.hugetlb=1';

/** GLIBC_TUNABLES for a session: the user's own tunables, with huge-page malloc added unless they set it themselves. */
export function withHugePageMalloc(tunables: string | undefined): string {
  if (!tunables) return HUGE_PAGE_MALLOC_TUNABLE;
  if (/(^|:)glibc\.malloc\.hugetlb=/.test(tunables)) return tunables;
  return `${tunables}:${HUGE_PAGE_MALLOC_TUNABLE}`;
}

/**
 * Python: collapses the anonymous mappings that the given processes asked to
 * be in huge pages (VmFlags `hg`) into huge pages, with process_madvise
 * MADV_COLLAPSE, 64 MiB a call (so that a stop lands within one call).
 * Prints {"bytes","seconds","failed":{errno name: calls}}. A process gone
 * is skipped; EINVAL (no transparent huge pages here) ends it.
 */
const COLLAPSE_PY = `
import ctypes, errno, json, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
SYS_PROCESS_MADVISE = 440
MADV_COLLAPSE = 25
HUGE = 2 << 20
STEP = 64 << 20
started = time.monotonic()
done = 0
failed = {}
def fail(e):
    name = errno.errorcode.get(e, str(e))
    failed[name] = failed.get(name, 0) + 1
def wanted(pid):
    out = []
    cur = None
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == 'VmFlags:':
                if cur and 'hg' in parts[1:]:
                    a, b = (cur[0] + HUGE - 1) & ~(HUGE - 1), cur[1] & ~(HUGE - 1)
                    if b - a >= HUGE:
                        out.append((a, b))
            elif not parts[0].endswith(':') and len(parts) >= 5:
                a, b = (int(x, 16) for x in parts[0].split('-'))
                path = parts[5] if len(parts) > 5 else ''
                cur = (a, b) if parts[4] == '0' and path in ('', '[heap]') else None
    return out
def collapse(pid):
    global done
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        for a, b in wanted(pid):
            for at in range(a, b, STEP):
                iov = iovec(at, min(STEP, b - at))
                for attempt in range(2):
                    n = libc.syscall(SYS_PROCESS_MADVISE, pidfd, ctypes.byref(iov), 1, MADV_COLLAPSE, 0)
                    if n >= 0:
                        done += n
                        break
                    e = ctypes.get_errno()
                    if e == errno.EAGAIN and attempt == 0:
                        time.sleep(0.01)
                        continue
                    fail(e)
                    if e == errno.ESRCH:
                        return True
                    if e in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                        return False
                    break
    except OSError:
        return True
    finally:
        os.close(pidfd)
    return True
for pid in sys.argv[1:]:
    if not collapse(int(pid)):
        break
print(json.dumps({'bytes': done, 'seconds': time.monotonic() - started, 'failed': failed}))
`;

const CollapseReport = z.object({ bytes: z.number(), seconds: z.number(), failed: z.record(z.string(), z.number()) });
export type CollapseReport = z.infer<typeof CollapseReport>;

/** Collapses, once, the huge-page mappings of the given processes (COLLAPSE_PY); aborted through `signal`. */
export async function collapseHugePages(pids: readonly number[], signal?: AbortSignal): Promise<CollapseReport> {
  const r = await run(PYTHON, pythonScriptArgs(COLLAPSE_PY, ...pids.map(String)), { signal, timeoutMs: 600_000 });
  return CollapseReport.parse(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? ''));
}

/**
 * Sessions whose memory is being put back into huge pages after a lazy
 * restore. criu's lazy pages daemon fills a mapping 4 KiB at a time
 * (userfaultfd has no huge-page copy for anonymous memory), so a session
 * moved post-copy or restored lazily runs in 4 KiB pages, and its next move
 * would lose what huge pages gained; the kernel's khugepaged would collapse
 * them too, but at its default pace a GiB takes it ten minutes. Collapsing
 * 1 GiB took 0.45-0.53 s of one core here, beside the running session. A
 * dump stops it first (stop): the session's next move does not wait for it.
 */
export class HugePageCollapses {
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();

  constructor(private readonly log: Logger) {}

  start(sessionId: string, pids: readonly number[]): void {
    if (this.running.has(sessionId) || pids.length === 0) return;
    const abort = new AbortController();
    const done = collapseHugePages(pids, abort.signal).then(
      (r) => this.log.info({ session: sessionId, mib: Math.round(r.bytes / 2 ** 20), seconds: r.seconds, failed: r.failed }, "the session's memory is back in huge pages"),
      (err: unknown) => {
        if (!abort.signal.aborted) this.log.warn({ session: sessionId, err: errorMessage(err) }, "the session's memory could not be put back into huge pages; it stays in 4 KiB pages");
      },
    );
    const entry = { abort, done: done.finally(() => this.running.get(sessionId) === entry && this.running.delete(sessionId)) };
    this.running.set(sessionId, entry);
  }

  isCollapsing(sessionId: string): boolean {
    return this.running.has(sessionId);
  }

  /** Ends a collapse under way (its helper killed) and waits for it; at once when there is none. */
  async stop(sessionId: string): Promise<void> {
    const c = this.running.get(sessionId);
    if (!c) return;
    c.abort.abort(new Error('stopped'));
    await c.done;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((id) => this.stop(id)));
  }
}
