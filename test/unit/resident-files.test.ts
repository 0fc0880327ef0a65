import { randomBytes } from 'node:crypto';
import { realpath, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run, waitFor } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import { ResidentFiles, commandPath, filesOfExecutables } from '../../src/util/resident-files.js';
import { lockedBytes } from '../helpers/session-processes.js';
import { useTempDir } from '../helpers/temp-dir.js';

const MIB = 1 << 20;

/** The bytes of `path` in the page cache (util-linux fincore). */
async function cachedBytes(path: string): Promise<number> {
  const { stdout } = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]);
  return Number(stdout.trim());
}

describe('ResidentFiles', () => {
  const tempDir = useTempDir('hubshift-resident-');

  it('should keep its files in the page cache, locked, through a drop of the page cache, and let them go when closed', async () => {
    const kept = join(tempDir(), 'kept');
    const left = join(tempDir(), 'left');
    await writeFile(kept, randomBytes(3 * MIB));
    await writeFile(left, randomBytes(3 * MIB));
    const resident = await ResidentFiles.start([kept]);
    const pid = resident.pid as number;
    try {
      expect(resident.report).toEqual({ locked: 3 * MIB, errors: [] });
      expect(await lockedBytes(pid)).toBe(3 * MIB);
      // The locked pages are the page cache's own (a private copy would leave the file's pages free to go).
      await run('sync', []);
      await writeFile('/proc/sys/vm/drop_caches', '1\n');
      expect(await cachedBytes(kept)).toBe(3 * MIB);
      expect(await cachedBytes(left)).toBeLessThan(3 * MIB);
    } finally {
      resident.close();
    }
    await waitFor('the helper to end', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    await writeFile('/proc/sys/vm/drop_caches', '1\n');
    expect(await cachedBytes(kept)).toBeLessThan(3 * MIB);
  });

  it('should lock what it can and name each file it cannot, with why', async () => {
    const kept = join(tempDir(), 'small');
    await writeFile(kept, randomBytes(8192));
    const missing = join(tempDir(), 'missing');
    const resident = await ResidentFiles.start([missing, kept]);
    try {
      expect(resident.report.locked).toBe(8192);
      expect(resident.report.errors).toEqual([`${missing}: No such file or directory`]);
    } finally {
      resident.close();
    }
  });

  it('should end with its parent: it waits on its stdin', async () => {
    const kept = join(tempDir(), 'orphan');
    await writeFile(kept, randomBytes(4096));
    const resident = await ResidentFiles.start([kept]);
    const pid = resident.pid as number;
    // What the parent's exit does to the helper's stdin.
    (resident as unknown as { helper: { child: { stdin: NodeJS.WritableStream } } }).helper.child.stdin.end();
    await waitFor('the helper to end', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
  });
});

describe('the files of an executable', () => {
  it('should be the executable, its loader and its libraries, as real paths', async () => {
    const sh = await realpath('/bin/sh');
    const files = await filesOfExecutables(['/bin/sh']);
    expect(files[0]).toBe(sh);
    expect(files.some((f) => /\/libc\.so\.6$/.test(f))).toBe(true);
    expect(files.some((f) => /\/ld-linux[^/]*\.so\.\d+$/.test(f))).toBe(true);
    expect(files.every((f) => f.startsWith('/'))).toBe(true);
  });

  it('should name each shared file once across executables', async () => {
    const files = await filesOfExecutables(['/bin/sh', '/bin/ls']);
    expect(new Set(files).size).toBe(files.length);
    expect(files.filter((f) => /\/libc\.so\.6$/.test(f))).toHaveLength(1);
  });

  it('should find a command on PATH as a shell does', () => {
    expect(commandPath('sh', '/nowhere:/usr/bin:/bin')).toMatch(/^\/(usr\/)?bin\/sh$/);
    expect(commandPath('hubshift-no-such-command', '/usr/bin:/bin')).toBeNull();
    expect(commandPath('/opt/x/criu', '')).toBe('/opt/x/criu');
    // Relative PATH entries are skipped: they would depend on the agent's working directory.
    expect(commandPath('sh', '.:bin')).toBeNull();
  });
});
