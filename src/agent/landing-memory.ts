import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { PythonHelper } from '../util/python-helper.js';

/**
 * Memory warmed for a restore's fill, and freed just before criu restore
 * runs, so that the fill lands on it.
 *
 * On this VM a 2 MiB page that the guest freed more than a few seconds ago
 * costs the host's fault again at its first touch; one freed moments ago
 * does not. A restore fills its server's memory in huge pages
 * (criu/huge-page-fill.patch) while the session is frozen; by hand
 * (2026-12-03), 72 MiB read into huge pages took 121 ms on long-freed
 * memory, 17 ms when another process had populated 160 MiB and freed it
 * just before. Warming moves that cost before the freeze (a move in: from
 * the stream's header, while the memory is copied ahead) or beside the
 * verification (a restore from the store). Where memory is not handed
 * back (EC2's Nitro) it costs a few ms of a core and changes nothing.
 *
 * The memory is warmed and freed in one part for each CPU the agent may
 * run on, each by a thread pinned to that CPU: the kernel keeps freed huge
 * pages on the freeing CPU's own lists first (per-CPU page lists), and the
 * fill, on whichever CPU criu's restorer runs, takes from its own CPU's
 * list before the shared ones. Freed by one process on one CPU, as at
 * first (the helper killed), the fill missed them in 4 of 16 moves and
 * took 118-169 ms instead of 25-40; freed on every CPU, in none of 16,
 * and post-copy moves' freeze to first execute fell from a median of
 * 0.40 s (0.36-0.55) to 0.36 s (0.33-0.48) (1 GiB kernels, 2026-12-04,
 * `test-artifacts/mvlog.ts`, one run each, one after the other). The free
 * itself takes about a millisecond.
 *
 * The helper ends when its stdin closes: an agent that dies leaves no
 * memory held.
 */
export const LANDING_PY = `
import mmap, os, sys, threading, time
line = sys.stdin.readline()
if not line:
    sys.exit(0)
n = int(line)
t = time.monotonic()
huge = 2 << 20
cpus = sorted(os.sched_getaffinity(0))
each = max(huge, n // len(cpus) // huge * huge)
go = threading.Event()
def part(cpu, warm):
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass  # a CPU this thread may not use: its part is warmed and freed wherever it runs
    m = mmap.mmap(-1, each, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    try:
        m.madvise(23)  # MADV_POPULATE_WRITE (Linux 5.14): all of it faulted in by one call
    except OSError:
        for i in range(0, each, 4096):
            m[i] = 0
    warm.set()
    go.wait()
    m.madvise(mmap.MADV_DONTNEED)
parts = []
for cpu in cpus:
    warm = threading.Event()
    thread = threading.Thread(target=part, args=(cpu, warm), daemon=True)
    thread.start()
    parts.append((thread, warm))
for _, warm in parts:
    warm.wait()
print('warm', round(time.monotonic() - t, 4), flush=True)
if sys.stdin.readline().strip() == 'free':
    go.set()
    for thread, _ in parts:
        thread.join()
    print('freed', flush=True)
    sys.stdin.buffer.read()
`;

/** Memory held warm for one restore. */
export interface LandingHold {
  /** Seconds the warming took once it is done; null if the helper ended first (released, or failed). */
  readonly ready: Promise<number | null>;
  /** The helper's pid, while it runs. */
  readonly pid: number | undefined;
  /** Frees the memory; resolves once it is free (the helper then exits by itself). Harmless twice, and on failure. */
  release(): Promise<void>;
}

const NOTHING: LandingHold = { ready: Promise.resolve(null), pid: undefined, release: async () => undefined };

/** Warming is skipped on a node with less memory available than this many times its size: it must not make memory scarce. */
export const AVAILABLE_FACTOR = 8;

/** The node's available memory (MemAvailable), in bytes; Infinity where /proc/meminfo does not say. */
export function memAvailableBytes(): number {
  const kib = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  return kib === undefined ? Infinity : Number(kib) * 1024;
}

/** Warms memory for restores: `bytes` each (0: none). */
export class LandingMemory {
  constructor(
    readonly bytes: number,
    private readonly available: () => number = memAvailableBytes,
  ) {}

  /** Starts warming `bytes` of memory in huge pages in a helper process, held until release(). Nothing where memory is short. */
  warm(): LandingHold {
    if (this.bytes <= 0 || this.available() < this.bytes * AVAILABLE_FACTOR) return NOTHING;
    const helper = new PythonHelper(LANDING_PY);
    const { child } = helper;
    // Exit frees the memory before the parent hears of it (the kernel drops the mm before it notifies).
    const exited = once(child, 'close').then(
      () => undefined,
      () => undefined,
    );
    // Its lines: "warm SECONDS" once every part is faulted in, "freed" once every part is freed (asked by release).
    let warm = false;
    let warmed: (seconds: number | null) => void = () => undefined;
    let freedDone: () => void = () => undefined;
    const ready = new Promise<number | null>((resolve) => (warmed = resolve));
    const freed = new Promise<void>((resolve) => (freedDone = resolve));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const m = /^warm ([\d.]+)$/.exec(line);
      if (m) {
        warm = true;
        warmed(Number(m[1]));
      } else if (line === 'freed') freedDone();
    });
    void exited.then(() => {
      warmed(null);
      freedDone();
    });
    child.stdin?.write(`${Math.round(this.bytes)}\n`);
    let released: Promise<void> | undefined;
    return {
      ready,
      get pid() {
        return helper.usable ? child.pid : undefined;
      },
      release: () => {
        if (released) return released;
        if (!helper.usable) return (released = helper.error ? Promise.resolve() : exited);
        if (!warm) {
          // Still warming: killed, not asked (asked, it would answer only once warm).
          child.kill('SIGKILL');
          return (released = exited);
        }
        // Freed by its threads, each on its CPU (see above); the helper then ends by itself.
        child.stdin?.write('free\n');
        released = freed.then(() => void child.stdin?.end());
        return released;
      },
    };
  }
}
