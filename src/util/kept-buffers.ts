import { pageAlignedBuffer } from './aligned-buffer.js';

/**
 * Page-aligned buffers (aligned-buffer.ts) of one size kept for reuse, already written to. On a VM whose
 * balloon takes back the memory a guest frees (free page reporting, as on
 * the machine hubshift is measured on), the first write to each page a
 * process has not touched yet faults on the host: two fresh 4 MiB buffers
 * made a move's first memory comparison, inside its frozen window, three
 * times slower (230 ms of system time against 90). Kept and touched at
 * start, they stay backed.
 */
export class KeptBuffers {
  private readonly spare: Buffer[] = [];

  /** `keep`: how many are kept at most once given back (the rest left to the collector). */
  constructor(
    readonly bytes: number,
    private readonly keep: number,
  ) {}

  /** Makes `n` buffers now and writes every page of them. */
  warm(n: number): void {
    while (this.spare.length < Math.min(n, this.keep)) this.spare.push(pageAlignedBuffer(this.bytes).fill(0));
  }

  take(): Buffer {
    return this.spare.pop() ?? pageAlignedBuffer(this.bytes);
  }

  /** Once nothing reads or writes it any more. */
  giveBack(...buffers: Buffer[]): void {
    for (const b of buffers) if (this.spare.length < this.keep && b.length === this.bytes) this.spare.push(b);
  }
}
