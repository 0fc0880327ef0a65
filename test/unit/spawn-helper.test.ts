import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TimeoutError } from '../../src/core/errors.js';
import { CommandError, run, spawnHelperPid, startDetached, useSpawnHelper } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import { HelperSpawnError, SpawnHelper } from '../../src/util/spawn-helper.js';

// A daemon that says on its fd 3 when it is ready, then runs a little longer.
const DAEMON = ['/bin/sh', '-c', 'sleep 0.2; echo ready >&3; sleep 0.3; exit 7'] as const;

async function checkDetached(): Promise<void> {
  const started = performance.now();
  const d = await startDetached(DAEMON[0], DAEMON.slice(1), { statusFd: true });
  expect(await isAlive(d.pid)).toBe(true);
  const first = await Promise.race([d.status.then(() => 'status'), d.exited.then(() => 'exit')]);
  expect(first).toBe('status');
  expect(performance.now() - started).toBeGreaterThanOrEqual(150);
  expect(await d.exited).toBe(7);
}

// First, before any helper is in use in this process: startDetached forks this process itself.
describe('startDetached without a spawn helper', () => {
  it("should report the daemon's status write, then its exit code", async () => {
    expect(spawnHelperPid()).toBeUndefined();
    await checkDetached();
  });
});

describe('run() from the spawn helper', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-spawn-helper-'));
    useSpawnHelper();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('should start commands from the helper, not by forking this process', async () => {
    const helper = spawnHelperPid();
    expect(helper).toBeGreaterThan(0);
    const r = await run('/bin/sh', ['-c', 'echo $PPID']);
    expect(Number(r.stdout.trim())).toBe(helper);
  });

  it('should pass input, environment and working directory, and return both outputs', async () => {
    const r = await run('/bin/sh', ['-c', 'cat; echo "$HUBSHIFT_X"; pwd; echo oops >&2'], { input: 'from stdin\n', env: { ...process.env, HUBSHIFT_X: 'x=1' }, cwd: dir });
    expect(r).toEqual({ code: 0, signal: null, stdout: `from stdin\nx=1\n${dir}\n`, stderr: 'oops\n' });
  });

  it('should fail a non-zero exit with the command and its stderr, unless allowed', async () => {
    const err = await run('/bin/sh', ['-c', 'echo broken >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).message).toBe('/bin/sh -c echo broken >&2; exit 3 exited 3: broken');
    expect((await run('/bin/sh', ['-c', 'exit 3'], { allowFailure: true })).code).toBe(3);
  });

  it('should name the signal that ended a command', async () => {
    const r = await run('/bin/sh', ['-c', 'kill -TERM $$'], { allowFailure: true });
    expect(r).toMatchObject({ code: 128, signal: 'SIGTERM' });
  });

  it('should kill a command and what it started at the timeout', async () => {
    const pidFile = join(dir, 'child.pid');
    const err = await run('/bin/sh', ['-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    const child = Number((await readFile(pidFile, 'utf8')).trim());
    await new Promise((r) => setTimeout(r, 200));
    expect(await isAlive(child)).toBe(false);
  });

  it('should kill a command when its signal aborts, and start none under a signal already aborted', async () => {
    const stop = new AbortController();
    const running = run('/bin/sh', ['-c', 'sleep 30'], { signal: stop.signal }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    stop.abort(new Error('torn down'));
    expect(await running).toMatchObject({ message: 'torn down' });
    const marker = join(dir, 'ran');
    expect(await run('/bin/sh', ['-c', `: > ${marker}`], { signal: stop.signal }).catch((e: unknown) => e)).toMatchObject({ message: 'torn down' });
    await new Promise((r) => setTimeout(r, 100));
    expect(await readFile(marker).catch(() => 'never started')).toBe('never started');
  });

  it('should hand descriptors on as fd 3, 4, ...', async () => {
    await writeFile(join(dir, 'a'), 'first');
    await writeFile(join(dir, 'b'), 'second');
    const [a, b] = [await open(join(dir, 'a'), 'r'), await open(join(dir, 'b'), 'r')];
    try {
      const r = await run('/bin/sh', ['-c', 'cat <&3; echo; cat <&4'], { extraFds: [a.fd, b.fd] });
      expect(r.stdout).toBe('first\nsecond');
      // The helper's own slots are back on /dev/null: the next command inherits nothing.
      expect((await run('/bin/sh', ['-c', 'cat <&3'], { allowFailure: true })).code).not.toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('should reject a command that cannot start with its errno', async () => {
    const err = await run('/nonexistent/command', []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HelperSpawnError);
    expect((err as HelperSpawnError).code).toBe('ENOENT');
  });

  it("should start a daemon from the helper, and report its status write, then its exit code", async () => {
    await checkDetached();
    const d = await startDetached('/bin/sh', ['-c', 'echo $PPID > ' + join(dir, 'ppid')]);
    expect(await d.exited).toBe(0);
    expect(Number((await readFile(join(dir, 'ppid'), 'utf8')).trim())).toBe(spawnHelperPid());
  });

  it('should run commands side by side', async () => {
    const started = performance.now();
    const rs = await Promise.all([1, 2, 3, 4].map((i) => run('/bin/sh', ['-c', `sleep 0.3; echo ${i}`])));
    expect(rs.map((r) => r.stdout.trim())).toEqual(['1', '2', '3', '4']);
    expect(performance.now() - started).toBeLessThan(1_200);
  });
});

describe('a spawn helper that is gone', () => {
  it('should fail what it was running and refuse more', async () => {
    const h = SpawnHelper.start();
    const long = h.run({ argv: ['/bin/sleep', '30'], env: process.env });
    const sleeper = await long.pid;
    process.kill(h.pid as number, 'SIGKILL');
    await expect(long.exit).rejects.toThrow(/the spawn helper exited/);
    expect(h.alive).toBe(false);
    await expect(h.run({ argv: ['/bin/true'], env: process.env }).exit).rejects.toThrow(/the spawn helper exited/);
    // Its command is left running, as a detached spawn's would be.
    expect(await isAlive(sleeper)).toBe(true);
    process.kill(sleeper, 'SIGKILL');
  });
});

// Last: it kills this process's own helper.
describe("this process's spawn helper gone", () => {
  it('should keep a daemon it started counted as running until the daemon ends, and fork commands here again', async () => {
    const helper = spawnHelperPid() as number;
    expect(helper).toBeGreaterThan(0);
    const d = await startDetached('/bin/sleep', ['30']);
    process.kill(helper, 'SIGKILL');
    let ended: number | undefined;
    void d.exited.then((code) => (ended = code));
    await new Promise((r) => setTimeout(r, 500));
    // Its exit code went with the helper, but it still runs: not reported ended.
    expect(await isAlive(d.pid)).toBe(true);
    expect(ended).toBeUndefined();
    process.kill(d.pid, 'SIGKILL');
    expect(await d.exited).toBe(127);
    expect(spawnHelperPid()).toBeUndefined();
    const r = await run('/bin/sh', ['-c', 'echo $PPID']);
    expect(Number(r.stdout.trim())).toBe(process.pid);
  });
});
