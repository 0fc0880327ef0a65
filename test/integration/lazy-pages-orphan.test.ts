import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dump } from '../../src/criu/driver.js';
import { startLazyPages } from '../../src/criu/lazy-pages.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { sleep } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';

/**
 * A lazy-pages daemon waits for ever for its restore to connect. One whose
 * agent died before starting criu restore must not stay: its orphan guard
 * ends it, unless a restore claimed it.
 */
describe('a lazy-pages daemon no restore connects to', () => {
  let work: string;
  let sleeper: ChildProcess;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hubshift-orphan-'));
    // Something to serve: the images of a small process, dumped and left running.
    sleeper = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    await dump(await loadSelectedCriu(), { pid: sleeper.pid!, imagesDir: join(work, 'dump'), logFile: join(work, 'dump.log'), leaveRunning: true, timeoutMs: 60_000 });
  });
  afterAll(async () => {
    killQuietly(sleeper.pid!);
    await rm(work, { recursive: true, force: true });
  });

  /** A copy of the dump in a work directory of its own, as a restore gets one. */
  const images = async (name: string): Promise<string> => {
    const dir = join(work, name, 'images');
    await mkdir(dir, { recursive: true });
    await cp(join(work, 'dump'), dir, { recursive: true });
    return dir;
  };

  /** A daemon no restore claims, over its own copy of the dump; `before` acts on it first. Ended by its guard within 8 s. */
  const expectEndedByGuard = async (name: string, before: (dir: string) => Promise<void>): Promise<void> => {
    const dir = await images(name);
    const d = await startLazyPages(await loadSelectedCriu(), dir, join(work, `${name}.log`), { orphanAfterMs: 1_000 });
    try {
      expect(await isAlive(d.pid)).toBe(true);
      await before(dir);
      const code = await Promise.race([d.exited, sleep(8_000).then(() => 'still running')]);
      expect(code).not.toBe('still running');
    } finally {
      killQuietly(d.pid);
    }
  };

  it('should be ended by its guard when no restore claims it', async () => {
    await expectEndedByGuard('orphan', async () => undefined);
  });

  it("should be found and ended by its guard even when the agent died before writing the daemon's pid", async () => {
    // As if the agent had been killed inside the daemon's spawn: no pid beside the directory.
    await expectEndedByGuard('unrecorded', (dir) => rm(join(dir, '..', 'lazy-pages.pid')));
  });

  it('should be left alone once a restore has claimed it', async () => {
    const dir = await images('claimed');
    const d = await startLazyPages(await loadSelectedCriu(), dir, join(work, 'claimed.log'), { orphanAfterMs: 1_000 });
    try {
      d.claim();
      // The mark is beside the image directory, not in it (the directory may be kept as a checkpoint).
      expect(existsSync(join(dir, '..', 'lazy-pages.claimed'))).toBe(true);
      expect(existsSync(join(dir, 'lazy-pages.claimed'))).toBe(false);
      await sleep(2_500);
      expect(await isAlive(d.pid)).toBe(true);
    } finally {
      d.kill();
      await d.exited;
    }
  });
});
