import { once } from 'node:events';
import { readFileSync } from 'node:fs';
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
 * just before. The fill gets those blocks often, not always (the page
 * allocator merges freed blocks, and a fill on the other core may be given
 * older ones): the migrate bench's post-copy median fell from 0.74 s to
 * 0.59 s with it. Warming moves that cost before the freeze (a move in:
 * from the stream's header, while the memory is copied ahead) or beside
 * the verification (a restore from the store). Where memory is not handed
 * back (EC2's Nitro) it costs a few ms of a core and changes nothing.
 *
 * The helper ends when its stdin closes: an agent that dies leaves no
 * memory held.
 */
export const LANDING_PY = `
import mmap, sys, time
line = sys.stdin.readline()
if not line:
    sys.exit(0)
n = int(line)
t = time.monotonic()
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
try:
    m.madvise(23)  # MADV_POPULATE_WRITE (Linux 5.14): all of it faulted in by one call
except OSError:
    for i in range(0, n, 4096):
        m[i] = 0
print('warm', round(time.monotonic() - t, 4), flush=True)
sys.stdin.buffer.read()
`;

/** Memory held warm for one restore. */
export interface LandingHold {
  /** Seconds the warming took once it is done; null if the helper ended first (released, or failed). */
  readonly ready: Promise<number | null>;
  /** The helper's pid, while it runs. */
  readonly pid: number | undefined;
  /** Frees the memory; resolves once it is free (the helper has exited). Harmless twice, and on failure. */
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
    const ready = new Promise<number | null>((resolve) => {
      let out = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = /^warm ([\d.]+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      void exited.then(() => resolve(null));
    });
    child.stdin?.write(`${Math.round(this.bytes)}\n`);
    let released: Promise<void> | undefined;
    return {
      ready,
      get pid() {
        return helper.usable ? child.pid : undefined;
      },
      release: () => {
        if (!released) {
          // Killed, not asked: freed at once, whether it is still warming or holding.
          if (helper.usable) child.kill('SIGKILL');
          released = helper.error ? Promise.resolve() : exited;
        }
        return released;
      },
    };
  }
}
