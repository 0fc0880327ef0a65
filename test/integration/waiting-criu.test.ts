import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dump, restore } from '../../src/criu/driver.js';
import { stopProcesses, startIsolatedPython } from '../../src/criu/probe.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { WaitingCriu } from '../../src/criu/waiting-criu.js';
import { waitFor } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import type { CriuBinary } from '../../src/criu/binary.js';

// Sleeps until killed, holding a buffer whose hash it prints on SIGUSR1 (to the file named by its argument).
const HOLDER_PY = `
import hashlib, os, signal, sys, time
data = os.urandom(8 << 20)
def tell(*_):
    with open(sys.argv[1], 'w') as f: f.write(hashlib.sha256(data).hexdigest())
signal.signal(signal.SIGUSR1, tell)
print('ready', flush=True)
while True: time.sleep(3600)
`;

/** The pid criu waits as, once it does. */
async function waitingPid(w: WaitingCriu): Promise<number> {
  return waitFor('a criu to wait', async () => w.waitingPids[0], { timeoutMs: 10_000, intervalMs: 20 });
}

async function cmdline(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
}

describe('a criu started ahead of need', () => {
  let bin: CriuBinary;
  let dir: string;
  const pids: number[] = [];
  const waiting: WaitingCriu[] = [];
  beforeAll(async () => {
    bin = await loadSelectedCriu();
    dir = await mkdtemp(join(tmpdir(), 'hubshift-waiting-criu-'));
  });
  afterEach(async () => {
    for (const w of waiting.splice(0)) w.close();
    await stopProcesses(pids.splice(0));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("should dump and restore a process with the run's arguments, its environment for the action script, and be replaced once done", async () => {
    expect(bin.argsFromStdin, "setup's criu does not take its arguments on stdin: it is not hubshift's build (README, \"Which criu\")").toBe(true);
    // One waiting at a time: the restore's is the one started after the dump.
    const w = new WaitingCriu(bin, 1);
    waiting.push(w);
    w.warm();
    const first = await waitingPid(w);
    expect((await cmdline(first)).slice(-1)).toEqual(['--args-from-stdin']);

    const p = await startIsolatedPython(dir, 'holder', HOLDER_PY, [join(dir, 'hash-before')]);
    pids.push(...p.pids);
    process.kill(p.init, 'SIGUSR1');
    const before = await waitFor('the hash', async () => (await readFile(join(dir, 'hash-before'), 'utf8').catch(() => '')) || undefined, { timeoutMs: 5_000 });
    const script = join(dir, 'action.sh');
    const stages = join(dir, 'stages');
    // Its parent is criu: its command line is the run's, as a criu started for the dump would have.
    await writeFile(script, `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION $HUBSHIFT_WAITING_TEST $(tr '\\0' ' ' < /proc/$PPID/cmdline)" >> '${stages}'\n`, { mode: 0o755 });
    const images = join(dir, 'images');
    let startedAt = 0;
    await dump(bin, { pid: p.init, imagesDir: images, logFile: join(dir, 'dump.log'), actionScript: script, env: { HUBSHIFT_WAITING_TEST: 'from-the-run' }, ahead: w, onStarted: () => (startedAt = performance.now()), timeoutMs: 60_000 });
    expect(startedAt).toBeGreaterThan(0);
    // The waiting criu did the dump (it ends only once given its arguments, or killed), and the process is gone.
    expect(await isAlive(first)).toBe(false);
    expect(await isAlive(p.init)).toBe(false);
    expect(await readFile(stages, 'utf8')).toMatch(new RegExp(`^post-dump from-the-run \\S*criu dump -t ${p.init} -D ${images} `, 'm'));

    // Half a second after the run, another waits: the restore runs in it.
    const second = await waitingPid(w);
    expect(second).not.toBe(first);
    const r = await restore(bin, { imagesDir: images, logFile: join(dir, 'restore.log'), pidFile: join(dir, 'restored.pid'), ahead: w, timeoutMs: 60_000 });
    pids.push(r.pid);
    expect(await isAlive(second)).toBe(false);
    await rm(join(dir, 'hash-before'));
    process.kill(r.pid, 'SIGUSR1');
    const after = await waitFor('the hash after restore', async () => (await readFile(join(dir, 'hash-before'), 'utf8').catch(() => '')) || undefined, { timeoutMs: 5_000 });
    expect(after).toBe(before);
  });

  it('should report a failed run as a failure from its log, and start criu afresh when none waits', async () => {
    const w = new WaitingCriu(bin, 1);
    waiting.push(w);
    w.warm();
    const first = await waitingPid(w);
    // No such process: criu fails, and says so in its log.
    await expect(dump(bin, { pid: 2 ** 22 + 7, imagesDir: join(dir, 'none'), logFile: join(dir, 'none.log'), ahead: w, timeoutMs: 30_000 })).rejects.toThrow(/criu dump failed/);
    expect(await isAlive(first)).toBe(false);
    // Taken and not yet replaced: the next run starts its own criu, and fails the same way.
    await expect(dump(bin, { pid: 2 ** 22 + 7, imagesDir: join(dir, 'none2'), logFile: join(dir, 'none2.log'), ahead: w, timeoutMs: 30_000 })).rejects.toThrow(/criu dump failed/);
  });

  it('should start a daemon in a waiting criu and leave it running, its command line its own, while the next waits', async () => {
    const w = new WaitingCriu(bin);
    waiting.push(w);
    w.warm();
    const both = await waitFor('two to wait', async () => (w.waitingPids.length === 2 ? w.waitingPids : undefined), { timeoutMs: 10_000, intervalMs: 20 });
    const images = join(dir, 'served');
    await mkdir(images);
    // A page server waits for its client until killed: a daemon as a post-copy target's lazy-pages is.
    const d = w.launch(['page-server', '-D', images, '--address', '127.0.0.1', '--port', '27941', '-o', join(dir, 'page-server.log')]);
    expect(d?.pid).toBe(both[0]);
    pids.push(d?.pid as number);
    expect(await waitFor('its command line', async () => ((await cmdline(both[0]!)).includes('page-server') ? cmdline(both[0]!) : undefined), { timeoutMs: 5_000 })).toEqual([
      ...bin.argv.slice(-1),
      'page-server',
      '-D',
      images,
      '--address',
      '127.0.0.1',
      '--port',
      '27941',
      '-o',
      join(dir, 'page-server.log'),
    ]);
    expect(w.waitingPids).toEqual([both[1]]);
    // Half a second after the launch, the next is started: two wait again, the daemon still runs.
    await waitFor('two to wait again', async () => (w.waitingPids.length === 2 ? true : undefined), { timeoutMs: 10_000, intervalMs: 20 });
    expect(await isAlive(both[0]!)).toBe(true);
    process.kill(both[0]!, 'SIGKILL');
    expect(await d?.exited).toBe(128);
  });

  it('should leave no criu behind once closed, and start none for a criu without the option', async () => {
    const w = new WaitingCriu(bin);
    w.warm();
    const left = await waitFor('two to wait', async () => (w.waitingPids.length === 2 ? w.waitingPids : undefined), { timeoutMs: 10_000, intervalMs: 20 });
    w.close();
    for (const pid of left) await waitFor('the waiting criu to be gone', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000 });
    expect(w.waitingPids).toEqual([]);

    const stock = new WaitingCriu({ argv: bin.argv, argsFromStdin: false });
    stock.warm();
    await new Promise((r) => setTimeout(r, 300));
    expect(stock.waitingPids).toEqual([]);
    stock.close();
  });
});
