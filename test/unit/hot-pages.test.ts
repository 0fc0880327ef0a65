import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_HOT_PAGES, readHotPages, recordHotPages } from '../../src/agent/hot-pages.js';
import { faultedPages } from '../../src/criu/lazy-faults.js';
import { useTempDir } from '../helpers/temp-dir.js';

// Lines as criu 4.2.1's lazy-pages daemon writes them at -v4: faults, and the background copy's lines around them.
const LOG = [
  '(00.000021) Will daemonize',
  '(00.812345) uffd: 4-7: Found 262656 pages to be handled by UFFD',
  '(00.912001) uffd: 4-7: #PF at 0x55d2c3a01000',
  '(00.912050) uffd: 4-7: uffd_copy: 0x55d2c3a01000/4096',
  '(00.913000) uffd: 1-6: #PF at 0x7f31f809c000',
  '(00.913400) uffd: 4-7: #PF at 0x7f31f8000000',
  '(00.913900) uffd: 4-7: #PF at 0x55d2c3a01000',
  '(00.914000) uffd: 4-7: uffd_copy: 0x7f31f8400000/4194304',
  '(00.915000) uffd: 4-7: #PF at 0x55d2c3a02000',
].join('\n');

describe('the pages a lazy restore faulted on', () => {
  const tmp = useTempDir('hubshift-hot-pages-');

  it("should read each process's faulted pages from the daemon's log, in the order asked, each once, up to the limit", () => {
    expect(faultedPages(LOG, 100)).toEqual(
      new Map([
        [4, [0x55d2c3a01000, 0x7f31f8000000, 0x55d2c3a02000]],
        [1, [0x7f31f809c000]],
      ]),
    );
    expect(faultedPages(LOG, 2).get(4)).toEqual([0x55d2c3a01000, 0x7f31f8000000]);
    // A daemon at -v2 writes no fault line.
    expect(faultedPages('(00.1) uffd: 4-7: UFFD transferred pages: (262656/262656)', 100)).toEqual(new Map());
  });

  it('should keep the faulted pages and those brought eagerly, read them back, and keep the last file when there is nothing new', async () => {
    const log = join(tmp(), 'lazy.log');
    const file = join(tmp(), 'hot-pages.json');
    await writeFile(log, LOG);
    // This restore brought two pages of process 4 eagerly (they did not fault), and one of process 9.
    const applied = new Map([
      [4, [0x55d2c3a03000, 0x55d2c3a01000]],
      [9, [0x1000]],
    ]);
    expect(await recordHotPages(file, log, applied)).toBe(6);
    // Runs of consecutive pages.
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      version: 1,
      processes: { '1': [[0x7f31f809c000, 1]], '4': [[0x55d2c3a01000, 3], [0x7f31f8000000, 1]], '9': [[0x1000, 1]] },
    });
    expect(await readHotPages(file)).toEqual(
      new Map([
        [1, [0x7f31f809c000]],
        [4, [0x55d2c3a01000, 0x55d2c3a02000, 0x55d2c3a03000, 0x7f31f8000000]],
        [9, [0x1000]],
      ]),
    );
    // A restore with no fault and nothing applied leaves the hint as it was.
    await writeFile(log, '(00.1) uffd: 4-7: UFFD transferred pages: (1/1)\n');
    expect(await recordHotPages(file, log, new Map())).toBe(0);
    expect((await readHotPages(file)).get(4)).toHaveLength(4);
  });

  it('should keep at most the limit a process, the faulted pages first', async () => {
    const log = join(tmp(), 'many.log');
    const file = join(tmp(), 'hot-pages.json');
    const page = (i: number): number => 0x7f0000000000 + i * 0x1000;
    await writeFile(log, Array.from({ length: MAX_HOT_PAGES + 10 }, (_, i) => `(00.5) uffd: 4-7: #PF at 0x${page(2 * i).toString(16)}`).join('\n'));
    expect(await recordHotPages(file, log, new Map([[4, [page(1)]]]))).toBe(MAX_HOT_PAGES);
    const hot = (await readHotPages(file)).get(4) ?? [];
    expect(hot).toHaveLength(MAX_HOT_PAGES);
    expect(hot).not.toContain(page(1));
    expect(hot[hot.length - 1]).toBe(page(2 * (MAX_HOT_PAGES - 1)));
  });

  it('should read no hot pages from a file that is missing or not one', async () => {
    expect(await readHotPages(join(tmp(), 'none.json'))).toEqual(new Map());
    const bad = join(tmp(), 'bad.json');
    await writeFile(bad, JSON.stringify({ version: 1, processes: { '4': [[-4096, 1]] } }));
    expect(await readHotPages(bad)).toEqual(new Map());
    // A page address that is not one: no entry is split there.
    await writeFile(bad, JSON.stringify({ version: 1, processes: { '4': [[0x7f0000000800, 1]] } }));
    expect(await readHotPages(bad)).toEqual(new Map());
    await writeFile(bad, '{"version":1,"processes":');
    expect(await readHotPages(bad)).toEqual(new Map());
  });
});
