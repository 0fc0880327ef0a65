import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CRIU_PIPE_BYTES, ensurePipeMaxSize } from '../../src/criu/pipe-size.js';
import { useTempDir } from '../helpers/temp-dir.js';

// The real sysctl is global to the machine; these tests use a file of the same shape.
describe('fs.pipe-max-size for criu lazy pages', () => {
  const tmp = useTempDir('hubshift-pipe-size-');

  it('should raise a size below 4 MiB to 4 MiB', async () => {
    const f = join(tmp(), 'low');
    await writeFile(f, '1048576\n');
    expect(await ensurePipeMaxSize(f)).toEqual({ before: 1048576, after: CRIU_PIPE_BYTES });
    expect((await readFile(f, 'utf8')).trim()).toBe(String(CRIU_PIPE_BYTES));
  });

  it('should never lower a larger size', async () => {
    const f = join(tmp(), 'high');
    await writeFile(f, '67108864\n');
    expect(await ensurePipeMaxSize(f)).toEqual({ before: 67108864, after: 67108864 });
    expect((await readFile(f, 'utf8')).trim()).toBe('67108864');
  });

  it('should say what to run when the size cannot be written', async () => {
    // A read-only sysctl that holds a number below 4 MiB: even root cannot write it.
    await expect(ensurePipeMaxSize('/proc/sys/kernel/ngroups_max')).rejects.toThrow(/could not be raised to 4194304 .*run 'sysctl fs.pipe-max-size=4194304' as root/);
    await expect(ensurePipeMaxSize(join(tmp(), 'missing'))).rejects.toThrow(/ENOENT/);
  });

  it('should hold at least 4 MiB on this machine once set up', async () => {
    const n = Number((await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim());
    expect(n).toBeGreaterThanOrEqual(CRIU_PIPE_BYTES);
  });
});
