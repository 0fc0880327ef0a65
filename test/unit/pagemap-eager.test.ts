import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CriuError } from '../../src/core/errors.js';
import { kernelMemoryChoice, mappingsOf, smallestMappings } from '../../src/agent/embedded-memory.js';
import { embedLazyMemory, lazyRuns, pageImagesInUse, pagesWritten, parentPagemap, restoreEagerly, restorePagesEagerly, splitLazyRuns, type EmbeddedPages } from '../../src/criu/pagemap.js';
import { useTempDir } from '../helpers/temp-dir.js';

// The start of a pagemap image as criu 4.2.1 wrote it here (a python process holding 1 GiB): the two
// magics, the head (pages image id), then entries whose flags (field 4) are 0x04 (PE_PRESENT) or
// 0x06 (PE_PRESENT | PE_LAZY); the last entry's field 5 is a two-byte varint.
const PAGEMAP = Buffer.from(
  [
    '19435654', '25400856',
    '04000000', '08818004',
    '0e000000', '0880a0f6e384c315', '1000', '2004', '2801',
    '0e000000', '0880e0f6e384c315', '1000', '2004', '2802',
    '0e000000', '088080cf8486c315', '1000', '2006', '287a',
    '0f000000', '0880e0ed8486c315', '1000', '2006', '288802',
  ].join(''),
  'hex',
);

describe("a lazy restore's eager server", () => {
  const tmp = useTempDir('hubshift-pagemap-');

  it('should clear PE_LAZY in every entry of the pagemap, and change no other byte', async () => {
    const path = join(tmp(), 'pagemap-1.img');
    await writeFile(path, PAGEMAP);
    expect(await restoreEagerly(tmp(), 1)).toBe(2);
    const after = await readFile(path);
    expect(after.length).toBe(PAGEMAP.length);
    const diff = [...after].flatMap((b, i) => (b === PAGEMAP[i] ? [] : [[i, PAGEMAP[i], b]]));
    // The two lazy entries' flags bytes: 0x06 -> 0x04.
    expect(diff).toEqual([
      [PAGEMAP.indexOf(Buffer.from('2006287a', 'hex')) + 1, 0x06, 0x04],
      [PAGEMAP.indexOf(Buffer.from('2006288802', 'hex')) + 1, 0x06, 0x04],
    ]);
    // Nothing left to change: the file is left alone.
    expect(await restoreEagerly(tmp(), 1)).toBe(0);
    expect(await readFile(path)).toEqual(after);
  });

  it('should refuse, with a typed error, what is not a pagemap it can read', async () => {
    await writeFile(join(tmp(), 'pagemap-2.img'), Buffer.concat([Buffer.from('1943565400000000', 'hex'), PAGEMAP.subarray(8)]));
    await expect(restoreEagerly(tmp(), 2)).rejects.toThrow(CriuError);
    // An entry cut short.
    await writeFile(join(tmp(), 'pagemap-3.img'), PAGEMAP.subarray(0, PAGEMAP.length - 3));
    await expect(restoreEagerly(tmp(), 3)).rejects.toThrow(/overruns/);
    // Unchanged when refused.
    expect((await readFile(join(tmp(), 'pagemap-3.img'))).length).toBe(PAGEMAP.length - 3);
  });
});

// A protobuf varint, for pagemap entries built here.
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** A pagemap entry as built here: where, how many pages, criu's flags. */
type Entry = { vaddr: number; pages: number; flags: number };

/** A pagemap image: the head (pages image id) and entries (vaddr, pages, flags), framed as criu 4.2.1 frames them. */
function pagemapImage(pagesId: number, entries: Entry[]): Buffer {
  const frame = (msg: number[]): Buffer => {
    const b = Buffer.alloc(4 + msg.length);
    b.writeUInt32LE(msg.length, 0);
    Buffer.from(msg).copy(b, 4);
    return b;
  };
  return Buffer.concat([
    Buffer.from('1943565425400856', 'hex'),
    frame([0x08, ...varint(pagesId)]),
    ...entries.map((e) => frame([0x08, ...varint(e.vaddr), 0x10, 0x00, 0x20, e.flags, 0x28, ...varint(e.pages)])),
  ]);
}

/**
 * A Python process holding `bytes` of anonymous memory filled by `fill` (Python, on `m`), at the page-aligned
 * address it prints. Killed by the caller.
 */
async function holdingMemory(bytes: number, fill: string): Promise<{ pid: number; vaddr: number; kill: () => void }> {
  const py = spawn('/usr/bin/python3', ['-c', `import mmap, ctypes, sys, time\nm = mmap.mmap(-1, ${bytes})\n${fill}\nprint(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)\ntime.sleep(60)`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const kill = (): void => void py.kill('SIGKILL');
  try {
    const [line] = (await once(py.stdout!, 'data')) as [Buffer];
    return { pid: py.pid!, vaddr: Number(line.toString().trim()), kill };
  } catch (err) {
    kill();
    throw err;
  }
}

/**
 * Process 1's images as a lazy dump leaves them in `dir`: its pagemap, and a
 * pages image holding an 'A' page then a 'C' page (its present entries').
 */
async function lazyDumpImages(dir: string, pagesId: number, entries: Entry[]): Promise<void> {
  await writeFile(join(dir, 'pagemap-1.img'), pagemapImage(pagesId, entries));
  await writeFile(join(dir, `pages-${pagesId}.img`), Buffer.concat([Buffer.alloc(4096, 'A'), Buffer.alloc(4096, 'C')]));
}

/** Every chunk an embedded pages image yields, each copied: a chunk is valid until the next is asked for. */
async function readChunks(e: EmbeddedPages): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const c of e.read()) chunks.push(Buffer.from(c));
  return chunks;
}

describe("a post-copy move's embedded server memory", () => {
  const tmp = useTempDir('hubshift-embed-');

  it("should read the lazy pages from the process's own memory in place in the pages image, in pagemap order, and mark them present", async () => {
    // A process holding two pages of known bytes.
    const py = await holdingMemory(8192, "m.write(b'L' * 4096 + b'M' * 4096)");
    const vaddr = py.vaddr;
    try {
      const dir = tmp();
      await lazyDumpImages(dir, 7, [
        { vaddr: 0x10000, pages: 1, flags: 0x04 },
        { vaddr, pages: 2, flags: 0x02 },
        { vaddr: 0x20000, pages: 1, flags: 0x04 },
      ]);
      const e = await embedLazyMemory(dir, 1, py.pid);
      expect(e).toMatchObject({ name: 'pages-7.img', bytes: 4 * 4096, added: 8192 });
      const chunks = await readChunks(e!);
      expect(Buffer.concat(chunks).toString('latin1')).toBe('A'.repeat(4096) + 'L'.repeat(4096) + 'M'.repeat(4096) + 'C'.repeat(4096));
      // The image on disk is left as criu wrote it: the memory goes only into the move stream.
      expect((await readFile(join(dir, 'pages-7.img'))).toString('latin1')).toBe('A'.repeat(4096) + 'C'.repeat(4096));
      // Now present and not lazy: criu restores them itself, and a second pass has nothing to add.
      expect(await embedLazyMemory(dir, 1, py.pid)).toBeNull();
      expect(await restoreEagerly(dir, 1)).toBe(0);
      const again = await readFile(join(dir, 'pagemap-1.img'));
      expect(again.length).toBe(pagemapImage(7, [{ vaddr: 0x10000, pages: 1, flags: 4 }, { vaddr, pages: 2, flags: 4 }, { vaddr: 0x20000, pages: 1, flags: 4 }]).length);
      expect(again).toEqual(pagemapImage(7, [{ vaddr: 0x10000, pages: 1, flags: 4 }, { vaddr, pages: 2, flags: 4 }, { vaddr: 0x20000, pages: 1, flags: 4 }]));
    } finally {
      py.kill();
    }
  });

  it('should fill whole 4 MiB chunks across runs, splitting a run where a chunk ends, the bytes in pagemap order', async () => {
    // 6 MiB whose every page holds its own number, so a byte out of place shows.
    const mib = 1 << 20;
    const py = await holdingMemory(6 * mib, "for i in range(1536): m[i*4096:(i+1)*4096] = i.to_bytes(4, 'little') * 1024");
    const vaddr = py.vaddr;
    try {
      const dir = tmp();
      await lazyDumpImages(dir, 3, [
        { vaddr: 0x10000, pages: 1, flags: 0x04 },
        { vaddr, pages: 768, flags: 0x02 },
        { vaddr: 0x20000, pages: 1, flags: 0x04 },
        { vaddr: vaddr + 3 * mib, pages: 768, flags: 0x02 },
      ]);
      const chunks = await readChunks((await embedLazyMemory(dir, 1, py.pid))!);
      expect(chunks.map((c) => c.length)).toEqual([4 * mib, 2 * mib + 8192]);
      const page = (i: number): Buffer => Buffer.alloc(4096, Buffer.from(new Uint32Array([i]).buffer));
      const pages = (from: number, n: number): Buffer[] => Array.from({ length: n }, (_, k) => page(from + k));
      const want = Buffer.concat([Buffer.alloc(4096, 'A'), ...pages(0, 768), Buffer.alloc(4096, 'C'), ...pages(768, 768)]);
      expect(Buffer.concat(chunks).equals(want)).toBe(true);
    } finally {
      py.kill();
    }
  });

  it('should embed only the runs chosen, leaving the others lazy and out of the stream', async () => {
    const py = await holdingMemory(3 * 4096, "m.write(b'L' * 4096 + b'M' * 4096 + b'N' * 4096)");
    const vaddr = py.vaddr;
    try {
      const dir = tmp();
      const entries = [
        { vaddr: 0x10000, pages: 1, flags: 0x04 },
        { vaddr, pages: 1, flags: 0x02 },
        { vaddr: vaddr + 4096, pages: 2, flags: 0x02 },
        { vaddr: 0x20000, pages: 1, flags: 0x04 },
      ];
      await lazyDumpImages(dir, 5, entries);
      expect(await lazyRuns(dir, 1)).toEqual([
        { pid: 1, vaddr, bytes: 4096 },
        { pid: 1, vaddr: vaddr + 4096, bytes: 8192 },
      ]);
      const e = await embedLazyMemory(dir, 1, py.pid, (r) => r.bytes === 8192);
      expect(e).toMatchObject({ name: 'pages-5.img', bytes: 4 * 4096, added: 8192 });
      expect(Buffer.concat(await readChunks(e!)).toString('latin1')).toBe('A'.repeat(4096) + 'M'.repeat(4096) + 'N'.repeat(4096) + 'C'.repeat(4096));
      expect(await readFile(join(dir, 'pagemap-1.img'))).toEqual(pagemapImage(5, [entries[0]!, entries[1]!, { ...entries[2]!, flags: 0x04 }, entries[3]!]));
      expect(await lazyRuns(dir, 1)).toEqual([{ pid: 1, vaddr, bytes: 4096 }]);
      // Nothing chosen: nothing changes.
      expect(await embedLazyMemory(dir, 1, py.pid, () => false)).toBeNull();
    } finally {
      py.kill();
    }
  });

  it('should leave the images as they were when the memory cannot be read', async () => {
    const dir = tmp();
    const image = pagemapImage(9, [{ vaddr: 0x10000, pages: 1, flags: 0x02 }]);
    await writeFile(join(dir, 'pagemap-2.img'), image);
    await writeFile(join(dir, 'pages-9.img'), Buffer.alloc(0));
    // Our own process has nothing mapped at 64 KiB: the read fails.
    await expect(embedLazyMemory(dir, 2, process.pid)).rejects.toThrow(/cannot be read/);
    expect(await readFile(join(dir, 'pagemap-2.img'))).toEqual(image);
    expect((await readFile(join(dir, 'pages-9.img'))).length).toBe(0);
    expect(existsSync(join(dir, 'pagemap-2.img.new'))).toBe(false);
  });
});

describe("a post-copy move's memory sent ahead (its parent image)", () => {
  const tmp = useTempDir('hubshift-parent-');

  it('should leave to the parent the pages it holds unchanged, and send the changed ones and those it lacks', async () => {
    // Five pages: L M N O P. The parent holds the first three, the second changed since, and not O or P.
    const py = await holdingMemory(5 * 4096, "m.write(b'L' * 4096 + b'M' * 4096 + b'N' * 4096 + b'O' * 4096 + b'P' * 4096)");
    const vaddr = py.vaddr;
    try {
      const dir = tmp();
      await lazyDumpImages(dir, 6, [
        { vaddr: 0x10000, pages: 1, flags: 0x04 },
        { vaddr, pages: 5, flags: 0x02 },
        { vaddr: 0x7f0000000000, pages: 1, flags: 0x04 },
      ]);
      const e = await embedLazyMemory(dir, 1, py.pid, undefined, { runs: [{ vaddr, bytes: 3 * 4096 }], changed: new Set([vaddr + 4096]) });
      expect(e).toMatchObject({ name: 'pages-6.img', added: 3 * 4096, inParent: 2 * 4096, bytes: 5 * 4096 });
      // criu's own pages, then the changed page and those the parent lacks, in pagemap order.
      expect(Buffer.concat(await readChunks(e!)).toString('latin1')).toBe('A'.repeat(4096) + 'M'.repeat(4096) + 'O'.repeat(4096) + 'P'.repeat(4096) + 'C'.repeat(4096));
      // The entry split: PE_PARENT (0x01) where the parent holds the page as it is, PE_PRESENT (0x04) where not.
      expect(await readFile(join(dir, 'pagemap-1.img'))).toEqual(
        pagemapImage(6, [
          { vaddr: 0x10000, pages: 1, flags: 0x04 },
          { vaddr, pages: 1, flags: 0x01 },
          { vaddr: vaddr + 4096, pages: 1, flags: 0x04 },
          { vaddr: vaddr + 8192, pages: 1, flags: 0x01 },
          { vaddr: vaddr + 12288, pages: 2, flags: 0x04 },
          { vaddr: 0x7f0000000000, pages: 1, flags: 0x04 },
        ]),
      );
      expect(await lazyRuns(dir, 1)).toEqual([]);
    } finally {
      py.kill();
    }
  });

  it('should take a parent run that starts before the entry, split the entry around a changed page, and write its pagemap as criu reads one', async () => {
    // 5 MiB, every page its own number; the parent holds them all from a page before the entry, one page changed since.
    const mib = 1 << 20;
    const py = await holdingMemory(5 * mib, "for i in range(1280): m[i*4096:(i+1)*4096] = i.to_bytes(4, 'little') * 1024");
    const vaddr = py.vaddr;
    try {
      const dir = tmp();
      await lazyDumpImages(dir, 2, [{ vaddr: vaddr + 4096, pages: 1279, flags: 0x02 }]);
      const page = (i: number): Buffer => Buffer.alloc(4096, Buffer.from(new Uint32Array([i]).buffer));
      const e = await embedLazyMemory(dir, 1, py.pid, undefined, { runs: [{ vaddr, bytes: 5 * mib }], changed: new Set([vaddr + 1100 * 4096]) });
      expect(e).toMatchObject({ added: 4096, inParent: 1278 * 4096 });
      // criu wrote no page of this process itself: the changed page is all the stream carries.
      expect(Buffer.concat(await readChunks(e!)).equals(page(1100))).toBe(true);
      expect(await readFile(join(dir, 'pagemap-1.img'))).toEqual(
        pagemapImage(2, [
          { vaddr: vaddr + 4096, pages: 1099, flags: 0x01 },
          { vaddr: vaddr + 1100 * 4096, pages: 1, flags: 0x04 },
          { vaddr: vaddr + 1101 * 4096, pages: 179, flags: 0x01 },
        ]),
      );
    } finally {
      py.kill();
    }
  });

  it("should leave to the parent criu's own present pages it holds unchanged, send the rest of them from criu's image, and read nothing from the process", async () => {
    const dir = tmp();
    // criu's pages image: A B C for the first entry, D for the last; the lazy entry between is not taken.
    await writeFile(join(dir, 'pagemap-1.img'), pagemapImage(3, [
      { vaddr: 0x10000, pages: 3, flags: 0x04 },
      { vaddr: 0x20000, pages: 1, flags: 0x02 },
      { vaddr: 0x30000, pages: 1, flags: 0x04 },
    ]));
    await writeFile(join(dir, 'pages-3.img'), Buffer.concat(['A', 'B', 'C', 'D'].map((c) => Buffer.alloc(4096, c))));
    // The parent holds A and B as they are, and D changed since. This process has nothing mapped at these addresses:
    // a read of it would fail.
    const e = await embedLazyMemory(dir, 1, process.pid, () => false, { runs: [{ vaddr: 0x10000, bytes: 8192 }, { vaddr: 0x30000, bytes: 4096 }], changed: new Set([0x30000]) });
    expect(e).toMatchObject({ name: 'pages-3.img', added: 0, inParent: 8192, bytes: 8192 });
    expect(Buffer.concat(await readChunks(e!)).toString('latin1')).toBe('C'.repeat(4096) + 'D'.repeat(4096));
    expect(await readFile(join(dir, 'pagemap-1.img'))).toEqual(
      pagemapImage(3, [
        { vaddr: 0x10000, pages: 2, flags: 0x01 },
        { vaddr: 0x12000, pages: 1, flags: 0x04 },
        { vaddr: 0x20000, pages: 1, flags: 0x02 },
        { vaddr: 0x30000, pages: 1, flags: 0x04 },
      ]),
    );
    // Nothing chosen and no present page in the parent: nothing to change.
    const untouched = join(tmp(), 'untouched');
    await mkdir(untouched);
    await lazyDumpImages(untouched, 5, [{ vaddr: 0x10000, pages: 1, flags: 0x04 }, { vaddr: 0x20000, pages: 1, flags: 0x02 }]);
    expect(await embedLazyMemory(untouched, 1, process.pid, () => false, { runs: [{ vaddr: 0x11000, bytes: 4096 }], changed: new Set() })).toBeNull();
  });

  it('should refuse to embed a process whose memory cannot be read where the parent does not hold it', async () => {
    const dir = tmp();
    await lazyDumpImages(dir, 8, [{ vaddr: 0x10000, pages: 2, flags: 0x02 }]);
    // The first page is the parent's and unchanged, the second must be read from a process that has nothing there.
    await expect(embedLazyMemory(dir, 1, process.pid, undefined, { runs: [{ vaddr: 0x10000, bytes: 4096 }], changed: new Set() })).rejects.toThrow(/cannot be read/);
  });

  it("should write each process's parent pagemap: its runs, all present, in a pages image named after the process", async () => {
    const dir = join(tmp(), 'parent');
    await mkdir(dir);
    const pagemap = parentPagemap(4, [
      { vaddr: 0x10000, bytes: 8192 },
      { vaddr: 0x7f0000001000, bytes: 4096 },
    ]);
    expect(pagemap).toEqual(pagemapImage(4, [{ vaddr: 0x10000, pages: 2, flags: 0x04 }, { vaddr: 0x7f0000001000, pages: 1, flags: 0x04 }]));
    await writeFile(join(dir, 'pagemap-4.img'), pagemap);
    expect(await pageImagesInUse(dir)).toEqual(new Set(['pages-4.img']));
  });
});

describe("a lazy restore's hot pages", () => {
  const tmp = useTempDir('hubshift-pagemap-hot-');
  const P = 0x1000;

  it('should split each lazy entry around the hot pages it holds, those eager, the rest lazy, in order, and leave the other entries as they were', async () => {
    const lazy = 0x06;
    const present = 0x04;
    const before = pagemapImage(9, [
      { vaddr: 0x10000, pages: 2, flags: present },
      { vaddr: 0x7f0000000000, pages: 10, flags: lazy },
      { vaddr: 0x7f0000100000, pages: 4, flags: lazy },
      { vaddr: 0x7f0000200000, pages: 3, flags: lazy },
    ]);
    const path = join(tmp(), 'pagemap-4.img');
    await writeFile(path, before);
    const A = 0x7f0000000000;
    const C = 0x7f0000200000;
    // Hot: the first two pages of A, its sixth and its last; all of C; a present page and pages no entry holds, ignored.
    const hot = [0x10000, A, A + P, A + 5 * P, A + 9 * P, 0x7f0000050000, C, C + P, C + 2 * P, 0x7f0000300000];
    expect(restorePagesEagerly(tmp(), 4, hot)).toBe(7);
    expect(await readFile(path)).toEqual(
      pagemapImage(9, [
        { vaddr: 0x10000, pages: 2, flags: present },
        { vaddr: A, pages: 2, flags: present },
        { vaddr: A + 2 * P, pages: 3, flags: lazy },
        { vaddr: A + 5 * P, pages: 1, flags: present },
        { vaddr: A + 6 * P, pages: 3, flags: lazy },
        { vaddr: A + 9 * P, pages: 1, flags: present },
        { vaddr: 0x7f0000100000, pages: 4, flags: lazy },
        { vaddr: C, pages: 3, flags: present },
      ]),
    );
    // None of them lazy any more: the file is left alone.
    const after = await readFile(path);
    expect(restorePagesEagerly(tmp(), 4, hot)).toBe(0);
    expect(await readFile(path)).toEqual(after);
  });
});

describe("a post-copy move's hot pages in a lazy dump's images", () => {
  const tmp = useTempDir('hubshift-pagemap-split-');
  const P = 0x1000;

  it('should split the entries a lazy dump left out around the hot pages, each run of them an entry of its own, still lazy, and nothing else', async () => {
    // A lazy dump's entries: PE_LAZY alone (not in the pages image); criu's own present ones (a stack page).
    const lazy = 0x02;
    const present = 0x04;
    const A = 0x7f0000000000;
    const path = join(tmp(), 'pagemap-5.img');
    await writeFile(
      path,
      pagemapImage(11, [
        { vaddr: 0x10000, pages: 2, flags: present },
        { vaddr: A, pages: 6, flags: lazy },
        { vaddr: 0x7f0000100000, pages: 2, flags: lazy },
      ]),
    );
    // Hot: A's second and third pages, its last; a present page, ignored.
    expect(splitLazyRuns(tmp(), 5, [0x10000, A + P, A + 2 * P, A + 5 * P])).toBe(3);
    expect(await readFile(path)).toEqual(
      pagemapImage(11, [
        { vaddr: 0x10000, pages: 2, flags: present },
        { vaddr: A, pages: 1, flags: lazy },
        { vaddr: A + P, pages: 2, flags: lazy },
        { vaddr: A + 3 * P, pages: 2, flags: lazy },
        { vaddr: A + 5 * P, pages: 1, flags: lazy },
        { vaddr: 0x7f0000100000, pages: 2, flags: lazy },
      ]),
    );
    // lazyRuns now names the hot runs as they are, for embedLazyMemory to take alone.
    expect((await lazyRuns(tmp(), 5)).map((r) => [r.vaddr - A, r.bytes / P])).toEqual([
      [0, 1],
      [P, 2],
      [3 * P, 2],
      [5 * P, 1],
      [0x100000, 2],
    ]);
    // A lazy restore's images (lazy entries present in the pages image) are not this: left alone.
    const stored = join(tmp(), 'pagemap-6.img');
    const image = pagemapImage(11, [{ vaddr: A, pages: 6, flags: lazy | present }]);
    await writeFile(stored, image);
    expect(splitLazyRuns(tmp(), 6, [A + P])).toBe(0);
    expect(await readFile(stored)).toEqual(image);
  });
});

describe("a post-copy move's share of the kernels' memory", () => {
  it("should take a process's hot pages that lie in its runs, as runs of their own, and the others' smallest mappings with what the budget leaves", () => {
    const P = 0x1000;
    const run = (pid: number, vaddr: number, pages: number) => ({ pid, vaddr, bytes: pages * P });
    const mappings = new Map([
      [4, [{ start: 0x100000, end: 0x200000 }]],
      [7, [{ start: 0x10000, end: 0x20000 }, { start: 0x30000, end: 0x40000 }]],
    ]);
    // Process 4: one large run; its hot pages two stretches in it, and one in no run (gone since), left out.
    const runs = [run(4, 0x100000, 64), run(7, 0x10000, 2), run(7, 0x30000, 8)];
    const hot = new Map([[4, [0x100000 + 3 * P, 0x100000 + 4 * P, 0x100000 + 10 * P, 0x900000]]]);
    expect(kernelMemoryChoice(runs, mappings, hot, 1 << 20)).toEqual([run(4, 0x100000 + 3 * P, 2), run(4, 0x100000 + 10 * P, 1), run(7, 0x10000, 2), run(7, 0x30000, 8)]);
    // The hot pages come first; process 7's mappings get what is left: its smaller one only.
    expect(kernelMemoryChoice(runs, mappings, hot, 6 * P)).toEqual([run(4, 0x100000 + 3 * P, 2), run(4, 0x100000 + 10 * P, 1), run(7, 0x10000, 2)]);
    // A budget smaller than the hot pages cuts them short, page by page.
    expect(kernelMemoryChoice(runs, mappings, hot, 1 * P)).toEqual([run(4, 0x100000 + 3 * P, 1)]);
    // No record: smallest mappings, as before; nor where the record names none of the process's pages (another
    // process with that pid since).
    expect(kernelMemoryChoice(runs, mappings, new Map(), 1 << 20)).toEqual(runs);
    expect(kernelMemoryChoice(runs, mappings, new Map([[4, [0x900000]]]), 1 << 20)).toEqual(runs);
  });


  it('should take whole mappings, those with the least lazy memory first, across processes, up to the budget and never past it', () => {
    const run = (pid: number, vaddr: number, kib: number) => ({ pid, vaddr, bytes: kib << 10 });
    const mappings = new Map([
      [4, [{ start: 0x1000, end: 0x5000 }, { start: 0x9000, end: 0x100000 }]],
      [7, [{ start: 0x1000, end: 0x2000 }, { start: 0x3000, end: 0x4000 }]],
    ]);
    // Process 4's first mapping holds a large run and a small one: 1032 KiB in all, taken with both or not at all.
    const runs = [run(4, 0x1000, 1 << 10), run(4, 0x2000, 8), run(7, 0x1000, 64), run(7, 0x3000, 4), run(4, 0x9000, 512), run(4, 0x200000, 4)];
    expect(smallestMappings(runs, mappings, 600 << 10)).toEqual(new Set(['7:4096', '7:12288', '4:36864']));
    expect(smallestMappings(runs, mappings, 2 << 20)).toEqual(new Set(['7:4096', '7:12288', '4:36864', '4:4096', '4:8192']));
    // The next smallest does not fit: it and every larger one stay lazy.
    expect(smallestMappings(runs, mappings, 100 << 10)).toEqual(new Set(['7:4096', '7:12288']));
    expect(smallestMappings(runs, mappings, 0)).toEqual(new Set());
  });

  it("should read a process's mappings in order, none for a process that is gone", () => {
    const own = mappingsOf(process.pid);
    expect(own.length).toBeGreaterThan(5);
    expect(own.every((m, i) => m.start < m.end && (i === 0 || (own[i - 1] as { end: number }).end <= m.start))).toBe(true);
    expect(mappingsOf(2 ** 22 + 1)).toEqual([]);
  });
});

describe('what a dump wrote itself, for a move\'s account', () => {
  const tmp = useTempDir('hubshift-pagemap-written-');

  it('should sum each process\'s present entries, name its largest run, and leave out lazy ones, small ones and unreadable pagemaps', async () => {
    // Process 1: two present pages and 300 present pages at 0x7f0000000000, 1000 lazy ones; process 7: one present page.
    await writeFile(join(tmp(), 'pagemap-1.img'), pagemapImage(1, [
      { vaddr: 0x400000, pages: 2, flags: 0x04 },
      { vaddr: 0x7f0000000000, pages: 300, flags: 0x04 },
      { vaddr: 0x7f1000000000, pages: 1000, flags: 0x02 }, // PE_LAZY alone
    ]));
    await writeFile(join(tmp(), 'pagemap-7.img'), pagemapImage(2, [{ vaddr: 0x500000, pages: 1, flags: 0x04 }]));
    await writeFile(join(tmp(), 'pagemap-9.img'), Buffer.from('not a pagemap'));
    expect(pagesWritten(tmp())).toEqual({
      1: { bytes: 302 * 4096, largest: { vaddr: '0x7f0000000000', bytes: 300 * 4096 } },
      7: { bytes: 4096, largest: { vaddr: '0x500000', bytes: 4096 } },
    });
    expect(Object.keys(pagesWritten(tmp(), 1 << 20))).toEqual(['1']);
    expect(pagesWritten(join(tmp(), 'nowhere'))).toEqual({});
  });
});
