import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/exec.js';
import { startIdleGuard, type IdleGuard } from '../../src/util/idle-guard.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { pathExists } from '../../src/util/fs.js';
import { useTempDir } from '../helpers/temp-dir.js';

describe('a guard started ahead of need', () => {
  const dir = useTempDir('hubshift-idle-guard-');
  const guards: IdleGuard[] = [];
  afterEach(() => {
    for (const g of guards.splice(0)) if (g.pid !== null) killQuietly(g.pid, 'SIGKILL');
  });
  const start = (tag: string): IdleGuard => {
    const g = startIdleGuard(tag);
    guards.push(g);
    expect(g.pid).not.toBeNull();
    return g;
  };
  const gone = (pid: number): Promise<true> => waitFor(`pid ${pid} to be gone`, async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });

  it('should wait idle, its tag a whole argument on its command line, and run the script it is armed with', async () => {
    const g = start(`test-guard=${dir()}`);
    await new Promise((r) => setTimeout(r, 300));
    expect(await isAlive(g.pid!)).toBe(true);
    expect((await readFile(`/proc/${g.pid}/cmdline`, 'utf8')).split('\0')).toContain(`test-guard=${dir()}`);
    const mark = join(dir(), 'ran');
    g.arm(`open(${JSON.stringify(mark)}, 'w').write(str(os.getpid()))\n`);
    await gone(g.pid!);
    expect(await readFile(mark, 'utf8')).toBe(String(g.pid));
  });

  it('should end without running anything when cancelled (or when its agent dies: its input ends the same way)', async () => {
    const g = start('test-guard-cancelled');
    g.cancel();
    // Arming after a cancel does nothing: the input has ended.
    g.arm(`open(${JSON.stringify(join(dir(), 'ran-cancelled'))}, 'w').write('x')\n`);
    await gone(g.pid!);
    expect(await pathExists(join(dir(), 'ran-cancelled'))).toBe(false);
  });

  it('should stay armed when cancelled after arming', async () => {
    const g = start('test-guard-armed');
    const mark = join(dir(), 'late');
    g.arm(`time.sleep(0.3)\nopen(${JSON.stringify(mark)}, 'w').write('x')\n`);
    g.cancel();
    await gone(g.pid!);
    expect(await pathExists(mark)).toBe(true);
  });
});
