import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CriuError } from '../../src/core/errors.js';
import { restoreEagerly } from '../../src/criu/pagemap.js';
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
