import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { run, sleep, waitFor } from '../util/exec.js';
import { childrenOf, isAlive, killQuietly } from '../util/proc.js';
import { criuCommand, type CriuBinary } from './binary.js';
import { dump, restore } from './driver.js';
import { buildAlignedStack, pageAlignedStacks } from './lazy-stack.js';
import { pagesWritten } from './pagemap.js';
import { diagnoseCriuLogFile } from './log.js';
import { argsFromStdinInput } from './waiting-criu.js';

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

interface ProbeProcess {
  init: number;
  /** Pids to kill when done, launcher first. */
  pids: number[];
  /** Where the restored process writes what came back over its connection. */
  result: string;
}

/**
 * Runs `command` in net and pid namespaces of its own (its output to
 * DIR/NAME.log) and waits until that output holds `ready`. `init` is its pid
 * here, the namespace's init: the tree criu dumps. `pids`: what to kill when
 * done, launcher first.
 */
async function startIsolated(dir: string, name: string, command: readonly string[], ready: string): Promise<{ init: number; pids: number[] }> {
  const log = join(dir, `${name}.log`);
  const argv = command.map((a) => `'${a}'`).join(' ');
  const child = spawn('unshare', ['--net', '--pid', '--fork', 'setsid', 'sh', '-c', `exec >>'${log}' 2>&1 </dev/null; ip link set lo up; exec ${argv}`], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  if (child.pid === undefined) throw new Error('could not start unshare');
  const pids = [child.pid];
  const init = await waitFor(`${name} to start`, async () => (await childrenOf(child.pid as number))[0], { timeoutMs: 10_000 });
  pids.push(init);
  await waitFor(`${name} ready`, async () => ((await readFile(log, 'utf8').catch(() => '')).includes(ready) ? true : undefined), { timeoutMs: 10_000 });
  return { init, pids };
}

/** startIsolated for the Python `script` (written to DIR/NAME.py) with `args`, ready once it prints "ready". */
export async function startIsolatedPython(dir: string, name: string, script: string, args: string[]): Promise<{ init: number; pids: number[] }> {
  const py = join(dir, `${name}.py`);
  await writeFile(py, script);
  return startIsolated(dir, name, ['/usr/bin/python3', py, ...args], 'ready');
}

/** Starts the probe process and waits until it holds its connection. */
async function startProbeProcess(dir: string): Promise<ProbeProcess> {
  const result = join(dir, 'result');
  return { ...(await startIsolatedPython(dir, 'probe', PROBE_PY, [result])), result };
}

/** Asks a restored probe to use its connection; true when the ping came back. */
async function pingThroughRestored(pid: number, result: string): Promise<string> {
  process.kill(pid, 'SIGUSR1');
  return waitFor('ping over the restored TCP connection', async () => {
    const text = await readFile(result, 'utf8').catch(() => '');
    return text ? text : undefined;
  }, { timeoutMs: 5_000 });
}

/** Kills `pids` (in reverse: a launcher's children first), waiting up to a second for each to go. */
export async function stopProcesses(pids: number[]): Promise<void> {
  for (const p of [...pids].reverse()) killQuietly(p);
  for (const p of pids) {
    for (let i = 0; i < 40 && (await isAlive(p)); i++) await sleep(25);
  }
}

async function cleanUp(pids: number[], dir: string, ok: boolean): Promise<void> {
  await stopProcesses(pids);
  // A failed probe keeps its directory: the error names the logs in it.
  if (ok) await rm(dir, { recursive: true, force: true });
}

/** Dumps the tree of `pid` into DIR/images and restores it from there (logs in DIR: dump.log, restore.log); the restored tree's pid. */
export async function dumpAndRestore(bin: CriuBinary, dir: string, pid: number): Promise<number> {
  const images = join(dir, 'images');
  await dump(bin, { pid, imagesDir: images, logFile: join(dir, 'dump.log'), timeoutMs: 60_000 });
  return (await restore(bin, { imagesDir: images, logFile: join(dir, 'restore.log'), pidFile: join(dir, 'restored.pid'), timeoutMs: 60_000 })).pid;
}

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
    const p = await startProbeProcess(dir);
    pids.push(...p.pids);
    const restored = await dumpAndRestore(bin, dir, p.init);
    pids.push(restored);
    const answer = await pingThroughRestored(restored, p.result);
    if (answer !== 'ping') return { ok: false, reason: `the restored TCP connection returned ${JSON.stringify(answer)} instead of "ping" (logs in ${dir})` };
    ok = true;
    return { ok: true, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  } finally {
    await cleanUp(pids, dir, ok);
  }
}

/** A port for a probe's page server, on loopback. */
const probePort = (): string => String(27_000 + Math.floor(Math.random() * 2_000));

/**
 * Starts `criu dump --lazy-pages` of the tree of `pid` into `imagesDir` (its
 * pid added to `pids`) and waits until it serves the pages, having written
 * its images; `exit` is its exit code, once it ends. A dump that ends
 * first fails with the first error of its log.
 */
async function lazyDumpServing(bin: CriuBinary, pid: number, imagesDir: string, dumpLog: string, port: string, pids: number[], extra: string[] = []): Promise<{ exit: Promise<number> }> {
  const d = criuCommand(bin, ['dump', '-t', String(pid), '-D', imagesDir, '-o', dumpLog, '-v4', ...extra, '--lazy-pages', '--address', '127.0.0.1', '--port', port]);
  const dumper = spawn(d.cmd, d.args, { stdio: 'ignore', detached: true });
  dumper.unref();
  if (dumper.pid) pids.push(dumper.pid);
  const exit = new Promise<number>((resolve) => dumper.on('exit', (code) => resolve(code ?? 1)));
  let done = false;
  void exit.then(() => (done = true));
  await waitFor('the lazy dump to serve its pages', async () => {
    if (done) throw new Error(`criu dump --lazy-pages failed: ${(await diagnoseCriuLogFile(dumpLog)).explanation} (log ${dumpLog})`);
    return (await readFile(dumpLog, 'utf8').catch(() => '')).includes('Starting page server') ? true : undefined;
  }, { timeoutMs: 30_000, intervalMs: 20 });
  return { exit };
}

/**
 * Whether post-copy migration works here: the probe process is dumped with
 * --lazy-pages (criu stays as its page server), its images without the lazy
 * pages copied elsewhere, and restored there with a lazy-pages daemon that
 * fetches the pages over the network; the restored connection must carry
 * data. A failure is reported with the first error of criu's own logs.
 */
export async function probePostCopy(bin: CriuBinary, workDir: string): Promise<{ ok: boolean; reason: string | null }> {
  const dir = await mkdtemp(join(workDir, 'criu-postcopy-'));
  const pids: number[] = [];
  let ok = false;
  const port = probePort();
  try {
    const p = await startProbeProcess(dir);
    pids.push(...p.pids);
    const src = join(dir, 'source');
    const dst = join(dir, 'target');
    await mkdir(src, { recursive: true });
    const dumpLog = join(dir, 'dump.log');
    const lazyDump = await lazyDumpServing(bin, p.init, src, dumpLog, port, pids, ['--tcp-established']);
    await cp(src, dst, { recursive: true });
    const lazyLog = join(dir, 'lazy-pages.log');
    const l = criuCommand(bin, ['lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', port, '-D', dst, '-o', lazyLog, '-v4']);
    const daemon = spawn(l.cmd, l.args, { stdio: 'ignore', detached: true });
    daemon.unref();
    if (daemon.pid) pids.push(daemon.pid);
    await waitFor('criu lazy-pages to listen', async () => (existsSync(join(dst, 'lazy-pages.socket')) ? true : undefined), { timeoutMs: 10_000, intervalMs: 5 });
    try {
      const restored = await restore(bin, { imagesDir: dst, logFile: join(dir, 'restore.log'), pidFile: join(dir, 'restored.pid'), timeoutMs: 30_000, lazyPages: true });
      pids.push(restored.pid);
      const answer = await pingThroughRestored(restored.pid, p.result);
      if (answer !== 'ping') return { ok: false, reason: `after a lazy migration the TCP connection returned ${JSON.stringify(answer)} (logs in ${dir})` };
    } catch (err) {
      // The dump side's error is the cause; the restore only saw its page server go.
      await Promise.race([lazyDump.exit, sleep(2_000)]);
      const cause = await diagnoseCriuLogFile(dumpLog);
      return { ok: false, reason: `${cause.explanation ? `the page server of criu dump --lazy-pages failed: ${cause.explanation}` : errorMessage(err)} (logs in ${dir})` };
    }
    ok = true;
    return { ok: true, reason: null };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  } finally {
    await cleanUp(pids, dir, ok);
  }
}

// A process holding 10 MiB of anonymous memory that it advised into transparent huge pages, every page written.
const HUGE_FILL_PY = `
import mmap, time
m = mmap.mmap(-1, 10 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
for off in range(0, len(m), 4096):
    m[off] = 1
print('ready', flush=True)
while True: time.sleep(3600)
`;

/** KiB of `pid`'s memory in huge pages within the mappings it advised into them (VmFlags `hg`). */
export async function advisedHugePageKiB(pid: number): Promise<number> {
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  let huge = 0;
  let total = 0;
  for (const line of smaps.split('\n')) {
    const m = /^AnonHugePages:\s+(\d+) kB/.exec(line);
    if (m) huge = Number(m[1]);
    else if (line.startsWith('VmFlags:') && line.split(/\s+/).includes('hg')) total += huge;
  }
  return total;
}

/**
 * Whether a restore by this criu fills memory that the process had advised
 * into huge pages in huge pages (hubshift's build), rather than 4 KiB at a
 * time and advised only afterwards (stock criu): a small process holding
 * such memory is dumped and restored, and the restored one's mappings read
 * at once, before the kernel's khugepaged could have collapsed them.
 */
export async function probeHugePageFill(bin: CriuBinary, workDir: string): Promise<{ ok: boolean; reason: string | null }> {
  const dir = await mkdtemp(join(workDir, 'criu-huge-fill-'));
  const pids: number[] = [];
  let ran = false;
  try {
    const p = await startIsolatedPython(dir, 'huge', HUGE_FILL_PY, []);
    pids.push(...p.pids);
    const before = await advisedHugePageKiB(p.init);
    if (before === 0) return { ok: false, reason: 'a process that advised its memory into huge pages got none here (transparent huge pages are off?)' };
    const restored = await dumpAndRestore(bin, dir, p.init);
    pids.push(restored);
    const after = await advisedHugePageKiB(restored);
    ran = true;
    return after > 0 ? { ok: true, reason: null } : { ok: false, reason: `the restore filled the ${before} KiB the process had in huge pages 4 KiB at a time` };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  } finally {
    await cleanUp(pids, dir, ran);
  }
}

/**
 * Whether a lazy dump by this criu keeps lazy the memory of a process one of
 * whose threads is blocked with its stack pointer page-aligned (hubshift's
 * build, lazy-stack-page.patch), rather than writing the whole process into
 * the images (stock criu 4.2.1; src/criu/lazy-stack.ts). The aligned-stack
 * process, holding 8 MiB, is dumped with --lazy-pages in namespaces of its
 * own; once criu serves pages its images say what it wrote itself, and the
 * dump is ended there.
 */
export async function probeLazyStack(bin: CriuBinary, workDir: string): Promise<{ ok: boolean; reason: string | null }> {
  const dir = await mkdtemp(join(workDir, 'criu-lazy-stack-'));
  const pids: number[] = [];
  let ran = false;
  try {
    const p = await startIsolated(dir, 'stack', [await buildAlignedStack(dir), '0', '8'], '\n');
    pids.push(...p.pids);
    await waitFor('its thread to block with a page-aligned stack pointer', async () => ((await pageAlignedStacks([p.init])).some((t) => t.tid !== t.pid) ? true : undefined), {
      timeoutMs: 10_000,
    });
    const images = join(dir, 'images');
    await mkdir(images);
    // criu stays as the page server until killed with the rest (first: stopProcesses kills in reverse).
    await lazyDumpServing(bin, p.init, images, join(dir, 'dump.log'), probePort(), pids);
    const written = Object.values(pagesWritten(images));
    if (written.length === 0) throw new Error(`criu dump --lazy-pages wrote no pagemap into ${images}`);
    ran = true;
    const whole = written.filter((w) => w.bytes >= 1 << 20).reduce((a, w) => a + w.bytes, 0);
    return whole === 0 ? { ok: true, reason: null } : { ok: false, reason: `a lazy dump wrote ${whole} bytes of a process whose thread's stack pointer was page-aligned into its images, none of it lazy` };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  } finally {
    await cleanUp(pids, dir, ran);
  }
}

/**
 * Whether criu can be started ahead of need and given its arguments on
 * stdin (hubshift's build, args-from-stdin.patch; WaitingCriu): `--version`
 * given so, with a setting for its environment, must print criu's version.
 * Stock criu refuses the option.
 */
export async function probeArgsFromStdin(bin: CriuBinary): Promise<{ ok: boolean; reason: string | null }> {
  const { cmd, args } = criuCommand(bin, ['--args-from-stdin']);
  try {
    const r = await run(cmd, args, { input: argsFromStdinInput(['--version'], { HUBSHIFT_PROBE: '1' }), allowFailure: true, timeoutMs: 10_000 });
    if (r.code === 0 && /^Version: /m.test(r.stdout)) return { ok: true, reason: null };
    return { ok: false, reason: `criu --args-from-stdin exited ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split('\n')[0] ?? ''}` };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
}
