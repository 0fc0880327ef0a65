import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeAbandonedDumps } from '../../src/agent/dump-service.js';
import { newCheckpointId } from '../../src/core/ids.js';

describe('removeAbandonedDumps', () => {
  let dir = '';
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("should remove only checkpoints' and stop-and-copy moves' dump directories, leaving what a live criu or a settle step may still use", async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-abandoned-'));
    const [ck, move, post] = [newCheckpointId(), newCheckpointId(), newCheckpointId()];
    const kept = [`p-${post}`, `r-${ck}-mx5r0`, 'in-mx5r0-abc123', 'pages-s1234abcd-mx5r0', 'criu-probe-Ab12Cd'];
    for (const d of [ck, `m-${move}`, ...kept]) await mkdir(join(dir, d, 'images'), { recursive: true });
    await writeFile(join(dir, 'ahead-s1234abcd-mx5r0.bin'), 'x');
    await writeFile(join(dir, newCheckpointId()), 'a file, not a dump');
    expect((await removeAbandonedDumps(dir)).sort()).toEqual([ck, `m-${move}`].sort());
    expect((await readdir(dir)).filter((n) => kept.includes(n)).sort()).toEqual([...kept].sort());
    expect(await readdir(dir)).toHaveLength(kept.length + 2);
    expect(await removeAbandonedDumps(join(dir, 'missing'))).toEqual([]);
  });
});
