import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONNTRACK_BUCKETS, shrinkConntrackTable } from '../../src/criu/conntrack-table.js';
import { useTempDir } from '../helpers/temp-dir.js';

// The real table is the machine's; these tests use files of the same shape (the agent's own start shrinks the real one:
// agent-bad-input checks it).
describe("the host's connection-tracking table before criu walks it", () => {
  const tmp = useTempDir('hubshift-conntrack-');
  const table = async (name: string, buckets: string, count: string): Promise<{ buckets: string; count: string }> => {
    const files = { buckets: join(tmp(), `${name}-buckets`), count: join(tmp(), `${name}-count`) };
    await writeFile(files.buckets, `${buckets}\n`);
    await writeFile(files.count, `${count}\n`);
    return files;
  };

  it('should shrink a large, nearly unused table to the target', async () => {
    const f = await table('idle', '262144', '37');
    expect(await shrinkConntrackTable(DEFAULT_CONNTRACK_BUCKETS, f)).toEqual({ done: 'shrunk', before: 262144, after: 16384 });
    expect((await readFile(f.buckets, 'utf8')).trim()).toBe('16384');
  });

  it('should never grow a table, nor shrink one that tracks many connections', async () => {
    const small = await table('small', '4096', '0');
    expect(await shrinkConntrackTable(DEFAULT_CONNTRACK_BUCKETS, small)).toMatchObject({ done: 'left', before: 4096 });
    expect((await readFile(small.buckets, 'utf8')).trim()).toBe('4096');
    const busy = await table('busy', '262144', '9000');
    expect(await shrinkConntrackTable(DEFAULT_CONNTRACK_BUCKETS, busy)).toEqual({ done: 'left', before: 262144, why: 'it tracks 9000 connections' });
    expect((await readFile(busy.buckets, 'utf8')).trim()).toBe('262144');
  });

  it('should say so where there is no table, and what to run where it cannot be written', async () => {
    expect(await shrinkConntrackTable(DEFAULT_CONNTRACK_BUCKETS, { buckets: join(tmp(), 'none'), count: join(tmp(), 'none-count') })).toEqual({ done: 'absent' });
    // A read-only sysctl holding a number above the target: even root cannot write it.
    const count = join(tmp(), 'ro-count');
    await writeFile(count, '0\n');
    const r = await shrinkConntrackTable(DEFAULT_CONNTRACK_BUCKETS, { buckets: '/proc/sys/kernel/ngroups_max', count });
    expect(r).toMatchObject({ done: 'left' });
    expect(r.done === 'left' && r.why).toMatch(/could not be written .*run 'sysctl net.netfilter.nf_conntrack_buckets=16384' as root/);
  });
});
