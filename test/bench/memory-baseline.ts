import { z } from 'zod';
import { run } from '../../src/util/exec.js';
import { PYTHON } from '../../src/util/proc.js';
import { median } from './median.js';

/**
 * What a first touch of fresh memory costs on this machine now: criu fills a
 * restore's eager memory page by page into pages nobody has touched, and a
 * lazy restore's daemon does the same with the rest, so both run at this rate.
 * On this VM it is the host backing each 4 KiB page at its first access
 * (the guest hands freed memory back at once; memory populated with
 * MADV_POPULATE_WRITE is as slow at its first access), and it varies: ~5 µs a
 * page on 2026-12-01 evening, 12-18 µs the next night. The benches print it
 * beside their figures.
 */
export interface MemoryBaseline {
  /** Median of the runs (nearest rank): seconds per 4 KiB page touched for the first time. */
  secondsPerPage: number;
  /** Bytes touched in each run. */
  bytes: number;
  /** Each run's seconds. */
  runs: number[];
}

// Each run maps fresh private anonymous memory (as criu's restore and a process's heap do), writes a byte in each
// page, and unmaps it; a separate process, so that every byte is returned when it exits.
const FIRST_TOUCH_PY = `
import json, mmap, sys, time
size, runs = int(sys.argv[1]), int(sys.argv[2])
out = []
for _ in range(runs):
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t = time.perf_counter()
    for off in range(0, size, 4096):
        m[off] = 1
    out.append(time.perf_counter() - t)
    m.close()
print(json.dumps(out))
`;

const Runs = z.array(z.number().positive()).min(1);

/** Touches `bytes` of fresh memory page by page, `runs` times; the median's cost a page. */
export async function measureFirstTouch(bytes = 128 << 20, runs = 3): Promise<MemoryBaseline> {
  const { stdout } = await run(PYTHON, ['-I', '-S', '-c', FIRST_TOUCH_PY, String(bytes), String(runs)], { timeoutMs: 120_000 });
  const seconds = Runs.parse(JSON.parse(stdout));
  return { secondsPerPage: median(seconds) / (bytes / 4096), bytes, runs: seconds };
}

/** "4.9 µs a page (128 MiB in 160 ms)" */
export function describeFirstTouch(m: MemoryBaseline): string {
  return `${(m.secondsPerPage * 1e6).toFixed(1)} µs a page (${(m.bytes / 2 ** 20).toFixed(0)} MiB in ${(m.secondsPerPage * (m.bytes / 4096) * 1000).toFixed(0)} ms)`;
}
