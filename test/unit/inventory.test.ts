import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CriuError } from '../../src/core/errors.js';
import { skipNetworkUnlock } from '../../src/criu/inventory.js';
import { useTempDir } from '../helpers/temp-dir.js';

// inventory.img as criu 4.2.1 wrote it here (`criu dump -t PID` of a sleep): the magic, the entry's size, then
// img_version, fdinfo_per_id, root_ids (a nested message), ns_per_id, root_cg_set, lsmtype,
// network_lock_method (field 11: `5800`, iptables), plugins_entry (empty) and the run id (a string).
const INVENTORY = Buffer.from(
  '163131584e000000080210011a180801100118012001280130023803400448065007580860052001280130005800620' +
    '06a2463326464376662342d333165342d346261332d623462372d393731353564393463623238',
  'hex',
);
const METHOD_AT = INVENTORY.indexOf(Buffer.from('58006200', 'hex')) + 1;

describe("criu's inventory image", () => {
  const tmp = useTempDir('hubshift-inventory-');

  it.each([
    ['iptables', 0],
    ['nftables', 1],
  ])('should turn a dump locked with %s into one whose restore unlocks nothing, changing no other byte', async (_, method) => {
    const path = join(tmp(), 'inventory.img');
    const before = Buffer.from(INVENTORY);
    before[METHOD_AT] = method;
    await writeFile(path, before);
    expect(await skipNetworkUnlock(tmp())).toBe(true);
    const after = await readFile(path);
    expect(after.length).toBe(before.length);
    expect([...after].flatMap((b, i) => (b === before[i] ? [] : [[i, before[i], b]]))).toEqual([[METHOD_AT, method, 2]]);
    // Already skip: left alone.
    expect(await skipNetworkUnlock(tmp())).toBe(false);
    expect(await readFile(path)).toEqual(after);
  });

  it('should refuse, with a typed error, what is not an inventory it can read, and leave it as it was', async () => {
    const path = join(tmp(), 'inventory.img');
    await writeFile(path, Buffer.concat([Buffer.from('19435654', 'hex'), INVENTORY.subarray(4)]));
    await expect(skipNetworkUnlock(tmp())).rejects.toThrow(CriuError);
    await writeFile(path, INVENTORY.subarray(0, INVENTORY.length - 5));
    await expect(skipNetworkUnlock(tmp())).rejects.toThrow(/overruns/);
    expect((await readFile(path)).length).toBe(INVENTORY.length - 5);
  });
});
