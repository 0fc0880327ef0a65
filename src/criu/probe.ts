import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { sleep, waitFor } from '../util/exec.js';
import { childrenOf, isAlive, killQuietly } from '../util/proc.js';
import type { CriuBinary } from './binary.js';
import { dump, restore } from './driver.js';

// A process holding an established loopback TCP connection. After restore,
// SIGUSR1 makes it send a ping over that connection and write what came back.
const PROBE_PY = `
import socket, signal, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
def ping(*_):
    cli.sendall(b'ping'); data = conn.recv(4)
    with open(sys.argv[1], 'w') as f: f.write(data.decode())
signal.signal(signal.SIGUSR1, ping)
print('ready', flush=True)
while True: time.sleep(3600)
`;

export type ProbeResult = { ok: true; seconds: number } | { ok: false; reason: string };

/**
 * The real test of a criu: dump and restore a small process, in its own net
 * and pid namespaces, that holds an established TCP connection, and check that
 * the connection carries data afterwards. `criu check` alone does not prove it.
 */
export async function probeCriu(bin: CriuBinary, workDir: string): Promise<ProbeResult> {
  const dir = await mkdtemp(join(workDir, 'criu-probe-'));
  const started = performance.now();
  const pids: number[] = [];
  let ok = false;
  try {
    await writeFile(join(dir, 'probe.py'), PROBE_PY);
    const log = join(dir, 'probe.log');
    const result = join(dir, 'result');
    const child = spawn(
      'unshare',
      ['--net', '--pid', '--fork', 'setsid', 'sh', '-c', `exec >>'${log}' 2>&1 </dev/null; ip link set lo up; exec /usr/bin/python3 '${join(dir, 'probe.py')}' '${result}'`],
      { detached: true, stdio: 'ignore' },
    );
    child.unref();
    if (child.pid === undefined) return { ok: false, reason: 'could not start unshare' };
    pids.push(child.pid);
    const init = await waitFor('probe process start', async () => (await childrenOf(child.pid as number))[0], { timeoutMs: 10_000 });
    pids.push(init);
    await waitFor('probe ready', async () => ((await readFile(log, 'utf8').catch(() => '')).includes('ready') ? true : undefined), { timeoutMs: 10_000 });
    const images = join(dir, 'images');
    await dump(bin, { pid: init, imagesDir: images, logFile: join(dir, 'dump.log'), timeoutMs: 60_000 });
    const restored = await restore(bin, { imagesDir: images, logFile: join(dir, 'restore.log'), pidFile: join(dir, 'restored.pid'), timeoutMs: 60_000 });
    pids.push(restored.pid);
    process.kill(restored.pid, 'SIGUSR1');
    const answer = await waitFor('ping over the restored TCP connection', async () => {
      const text = await readFile(result, 'utf8').catch(() => '');
      return text ? text : undefined;
    }, { timeoutMs: 5_000 });
    if (answer !== 'ping') return { ok: false, reason: `the restored TCP connection returned ${JSON.stringify(answer)} instead of "ping" (logs in ${dir})` };
    ok = true;
    return { ok: true, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  } finally {
    for (const p of pids.reverse()) killQuietly(p);
    for (const p of pids) {
      for (let i = 0; i < 40 && (await isAlive(p)); i++) await sleep(25);
    }
    // A failed probe keeps its directory: the error names the logs in it.
    if (ok) await rm(dir, { recursive: true, force: true });
  }
}
