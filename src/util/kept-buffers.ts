import { pageAlignedBuffer } from './aligned-buffer.js';

/**
 * Page-aligned buffers (aligned-buffer.ts) of one size, kept for reuse and
 * written once when made. A page's first write costs a page fault (about
 * 5 us a page on the VM hubshift is measured on: 10 ms for two 4 MiB
 * buffers, which a move's comparison used to pay inside its frozen window);
 * kept and warmed at the agent's start, they cost nothing after.
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
