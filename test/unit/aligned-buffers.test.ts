import { constants, closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pageAlignedBuffer } from '../../src/util/aligned-buffer.js';
import { KeptBuffers } from '../../src/util/kept-buffers.js';

describe('page-aligned buffers', () => {
  let dir: string;
  let file: string;
  beforeAll(async () => {
    // On disk, not in tmpfs: O_DIRECT is how the test sees a buffer's alignment (the kernel refuses a misaligned one).
    dir = await mkdtemp(join(tmpdir(), 'hubshift-aligned-'));
    file = join(dir, 'blocks');
    writeFileSync(file, Buffer.alloc(1 << 20, 7));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Reads the file's first 4 KiB with O_DIRECT into `b`: the error code, or null. */
  function directRead(b: Buffer): string | null {
    const fd = openSync(file, constants.O_RDONLY | constants.O_DIRECT);
    try {
      readSync(fd, b, 0, 4096, 0);
      return null;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? 'unknown';
    } finally {
      closeSync(fd);
    }
  }

  it('should start on a page, for sizes that are not a whole number of pages too', () => {
    for (const bytes of [64 << 10, 4 << 20, (1 << 20) + 100]) {
      const b = pageAlignedBuffer(bytes);
      expect(b.length).toBe(bytes);
      expect(directRead(b)).toBeNull();
      expect(b[0]).toBe(7);
      // The check sees a misaligned buffer: 16 bytes in is where glibc's large allocations start.
      expect(directRead(b.subarray(16))).toBe('EINVAL');
    }
  });

  it('should keep buffers given back, up to its limit, and hand out warmed ones first', () => {
    const kept = new KeptBuffers(64 << 10, 2);
    kept.warm(5);
    const a = kept.take();
    const b = kept.take();
    expect(a).not.toBe(b);
    expect(directRead(a)).toBeNull();
    const c = kept.take(); // none left: a new one, aligned as well
    expect(directRead(c)).toBeNull();
    kept.giveBack(a, b, c, Buffer.alloc(10));
    const again = [kept.take(), kept.take(), kept.take()];
    expect(again.filter((x) => x === a || x === b || x === c)).toHaveLength(2);
    expect(again.some((x) => x.length !== 64 << 10)).toBe(false);
  });
});
