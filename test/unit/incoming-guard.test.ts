import { spawn } from 'node:child_process';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LAZY_HANDOVER_LINE, lazyPagesFiles } from '../../src/criu/lazy-pages.js';
import { incomingImages, stopIncomingGuard } from '../../src/agent/incoming-copies.js';
import { armIncomingGuard, prestartIncomingGuard } from '../../src/agent/incoming-guard.js';
import type { PageServerAt } from '../../src/core/checkpoint.js';
import { restoredPidFile, restoredServerPid } from '../../src/agent/sandbox.js';
import { waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { useTempDir } from '../helpers/temp-dir.js';

// Nothing listens there: the guard's reset of the daemon's connection finds none.
const PAGE_SERVER = { address: '127.0.0.1', port: 9 };

/**
 * The guard of a session being moved in, against real processes standing in
 * for the restored copy (its environment names the session, as a restored
 * server's does) and the lazy-pages daemon (its arguments say lazy-pages and
 * its image directory).
 */
describe('the guard of a moved-in copy', () => {
  const dir = useTempDir('hubshift-guard-');
  const started: number[] = [];
  afterEach(() => {
    for (const pid of started.splice(0)) killQuietly(pid, 'SIGKILL');
  });

  const spawnAs = (argv0: string, env: Record<string, string>): number => {
    const child = spawn('/bin/bash', ['-c', `exec -a ${argv0} sleep 60`], { detached: true, stdio: 'ignore', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
    child.unref();
    started.push(child.pid!);
    return child.pid!;
  };
  /** A stand-in for the lazy-pages daemon of move in `name`: its arguments say `lazy-pages` and its image directory, as criu's do. */
  const daemonOf = (name: string): number => {
    const child = spawn('/usr/bin/python3', ['-c', 'import time; time.sleep(60)', 'lazy-pages', '-D', incomingImages(join(dir(), name))], { detached: true, stdio: 'ignore' });
    child.unref();
    started.push(child.pid!);
    return child.pid!;
  };

  /** A move in's work directory whose restore wrote `copy` as the restored pid; post-copy, a daemon whose log ends with `lastLine`. */
  const moveIn = async (name: string, copy: number, daemon?: { pid: number; lastLine: string }): Promise<string> => {
    const work = join(dir(), name);
    const images = incomingImages(work);
    await mkdir(images, { recursive: true });
    await writeFile(restoredPidFile(images), `${copy}\n`);
    if (daemon) {
      const files = lazyPagesFiles(images);
      await writeFile(files.pid, String(daemon.pid));
      await writeFile(join(work, 'daemon.log'), `(00.1) lazy-pages: started\n(00.2) ${daemon.lastLine}\n`);
      await symlink(join(work, 'daemon.log'), files.log);
    }
    return work;
  };

  /** Started ahead and armed at once, as a move in does (prestarted as its stream opens, armed before criu restore). */
  const startIncomingGuard = (sessionId: string, work: string, ms: number, pageServer: PageServerAt | undefined, restoreWaitMs?: number): number | null =>
    armIncomingGuard(prestartIncomingGuard(work), sessionId, work, ms, pageServer, restoreWaitMs);

  const gone = (pid: number): Promise<true> => waitFor(`pid ${pid} to be gone`, async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
  const guardEnded = (pid: number | null): Promise<true> => gone(pid!);

  it('should kill the copy its restore wrote, and only a process that is that session\'s', async () => {
    const copy = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard1' });
    const other = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard1x' });
    const work = await moveIn('w1', copy);
    const otherWork = await moveIn('w2', other);
    expect(await restoredServerPid(incomingImages(work), 'sguard1')).toBe(copy);
    expect(await restoredServerPid(incomingImages(otherWork), 'sguard1')).toBeNull();
    // Two guards of session sguard1: one names its copy, the other a process of another session (a reused pid).
    const guards = [startIncomingGuard('sguard1', work, 100, undefined), startIncomingGuard('sguard1', otherWork, 100, undefined)];
    await gone(copy);
    for (const g of guards) await guardEnded(g);
    expect(await isAlive(other)).toBe(true);
  });

  it('should wait for a criu restore still running in the work directory, and kill the copy whose pid it writes as it ends', async () => {
    const copy = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard5' });
    const work = await moveIn('w6', copy);
    const images = incomingImages(work);
    await rm(restoredPidFile(images));
    // A stand-in for criu restore (its arguments name the command and the images), which writes the pid file as it ends.
    const restore = spawn('/usr/bin/python3', ['-c', `import time; time.sleep(1.2); open(${JSON.stringify(restoredPidFile(images))}, 'w').write('${copy}')`, 'restore', '-D', images], { stdio: 'ignore' });
    started.push(restore.pid!);
    const guard = startIncomingGuard('sguard5', work, 100, undefined, 10_000);
    await gone(copy);
    await guardEnded(guard);
  });

  it('should end the daemon and the copy of a post-copy move that the daemon did not hand over', async () => {
    const copy = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard2' });
    const daemon = daemonOf('w3');
    const work = await moveIn('w3', copy, { pid: daemon, lastLine: 'uffd: 1234: #PF at 0x7f0000000000' });
    const guard = startIncomingGuard('sguard2', work, 100, PAGE_SERVER);
    await gone(daemon);
    await gone(copy);
    await guardEnded(guard);
  });

  it('should end the lazy-pages daemon of a post-copy move whose restore never ran (its agent died before criu restore)', async () => {
    const daemon = daemonOf('w7');
    const work = await moveIn('w7', 0, { pid: daemon, lastLine: 'lazy-pages: Waiting for restore to connect' });
    await rm(restoredPidFile(incomingImages(work)));
    const guard = startIncomingGuard('sguard6', work, 100, PAGE_SERVER);
    await gone(daemon);
    await guardEnded(guard);
  });

  it('should leave the copy of a post-copy move whose daemon handed the transfer over (the only copy left)', async () => {
    const copy = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard3' });
    const daemon = daemonOf('w4');
    const work = await moveIn('w4', copy, { pid: daemon, lastLine: LAZY_HANDOVER_LINE });
    await guardEnded(startIncomingGuard('sguard3', work, 100, PAGE_SERVER));
    expect(await isAlive(copy)).toBe(true);
    expect(await isAlive(daemon)).toBe(true);
  });

  it('should be stopped before it fires, by a pid whose script names the move\'s work directory only', async () => {
    const copy = spawnAs('python3', { HUBSHIFT_SESSION_ID: 'sguard4' });
    const work = await moveIn('w5', copy);
    const guard = startIncomingGuard('sguard4', work, 2_000, undefined)!;
    expect(await stopIncomingGuard(guard, join(dir(), 'elsewhere'))).toBe(false);
    expect(await stopIncomingGuard(guard, work)).toBe(true);
    await guardEnded(guard);
    expect(await stopIncomingGuard(guard, work)).toBe(false);
    await new Promise((r) => setTimeout(r, 2_300));
    expect(await isAlive(copy)).toBe(true);
  });
});
