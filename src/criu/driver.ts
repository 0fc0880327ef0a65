import { mkdir, open, readFile, rm } from 'node:fs/promises';
import type { PageServerAt } from '../core/checkpoint.js';
import { CriuError, TimeoutError, errorMessage } from '../core/errors.js';
import { CommandError, fdPathsOf, run, startDetached, type Detached, type RunOptions } from '../util/exec.js';
import { killQuietly } from '../util/proc.js';
import { criuCommand, type CriuBinary } from './binary.js';
import { diagnoseCriuLogFile } from './log.js';
import type { WaitingCriu } from './waiting-criu.js';

export interface DumpOptions {
  /** Host pid of the tree's root: for a session, its PID-namespace init. */
  pid: number;
  imagesDir: string;
  /** Where criu writes its log; kept after the call. */
  logFile: string;
  /** Keep the tree running after the dump (default: criu kills it once dumped). */
  leaveRunning?: boolean;
  /** Default 300 s. */
  timeoutMs?: number;
  /** A CRIU action script run at every stage (site hooks; tests use it for fault injection). */
  actionScript?: string;
  /** Written before criu starts, e.g. to let a page server stream pages elsewhere. */
  extraArgs?: string[];
  /** Extra environment for criu and its action scripts. */
  env?: Record<string, string>;
  signal?: AbortSignal;
  /**
   * Leave the tree's network namespace (this inode) out of the images: criu
   * neither dumps its links, addresses, routes and rules nor recreates them;
   * a restore joins a namespace the caller made (RestoreOptions.joinNetns).
   */
  externalNetnsIno?: number;
  /** How criu records, and a restore checks, the files the tree maps (FileValidation). Unset: criu's default. */
  fileValidation?: FileValidation;
  /** How much criu writes to logFile (CriuLogLevel). Default 4. */
  logLevel?: CriuLogLevel;
  /** Called once criu has started, while it dumps. */
  onStarted?: () => void;
  /** Where a criu started ahead of need waits, run in it if one is ready (plain dumps; startLazyDump starts its own). */
  ahead?: WaitingCriu;
}

/**
 * How criu makes sure a restore maps the files the dump saw (`--file-validation`):
 * `buildid` (criu's default) also reads each mapped ELF file's build-id, a
 * disk read per library where its first page is not cached; `filesize` checks
 * size and mode only.
 */
export type FileValidation = 'filesize' | 'buildid';

/**
 * criu's `-v`: 0 nothing, 1 errors, 2 also warnings, 3 also what it does,
 * 4 every step (a line per memory area, page pipe and socket: 13 000 lines
 * and 20-45 ms of a 1 GiB session's dump here, 9 000 lines of its restore).
 * The errors that diagnoseCriuLogFile explains are all printed from 1 up.
 */
export type CriuLogLevel = 0 | 1 | 2 | 3 | 4;

/** The key criu's images name an external network namespace by. */
const EXTERNAL_NETNS_KEY = 'hubshift-session-net';

export interface RestoreOptions {
  imagesDir: string;
  logFile: string;
  pidFile: string;
  /** `--external` values, e.g. `veth[eth0]:hsv-1a2b3c4d@hsbr0`. */
  externals?: string[];
  /** Default 120 s. */
  timeoutMs?: number;
  actionScript?: string;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Restore with pages left to a lazy-pages daemon already serving imagesDir (see startLazyPages). */
  lazyPages?: boolean;
  signal?: AbortSignal;
  /** For images dumped with externalNetnsIno: the namespace (e.g. /run/netns/NAME) the tree is restored into. */
  joinNetns?: string;
  fileValidation?: FileValidation;
  /** How much criu writes to logFile (CriuLogLevel). Default 4. */
  logLevel?: CriuLogLevel;
  /** Where a criu started ahead of need waits, run in it if one is ready. */
  ahead?: WaitingCriu;
}

// Options every call takes: established TCP (the kernel's ZMQ and the browser's
// websockets), file locks (sqlite), a log kept for diagnosis.
function commonArgs(bin: CriuBinary, logFile: string, actionScript?: string, fileValidation?: FileValidation, logLevel: CriuLogLevel = 4): string[] {
  const args = [`-v${logLevel}`, '-o', logFile, '--tcp-established', '--file-locks'];
  if (fileValidation) args.push('--file-validation', fileValidation);
  if (bin.nftablesLock) args.push('--network-lock', 'nftables');
  if (bin.libdir) args.push('--libdir', bin.libdir);
  if (actionScript) args.push('--action-script', actionScript);
  return args;
}

/** How runCriu runs criu: run()'s options, with criu's own environment added to this process's. */
type CriuRunOptions = Pick<RunOptions, 'signal' | 'extraFds' | 'onSpawn'> & { timeoutMs: number; env?: Record<string, string>; ahead?: WaitingCriu };

async function runCriu(bin: CriuBinary, op: 'dump' | 'restore', args: string[], logFile: string, opts: CriuRunOptions): Promise<number> {
  const { cmd, args: full } = criuCommand(bin, args);
  const { timeoutMs, env } = opts;
  const started = performance.now();
  try {
    // An aborted run must not use up the waiting criu: run() refuses it before it starts anything.
    const ahead = opts.signal?.aborted ? undefined : opts.ahead?.run(args, { env, fdPaths: opts.extraFds && fdPathsOf(opts.extraFds) }, opts);
    await (ahead ?? run(cmd, full, { ...opts, env: env ? { ...process.env, ...env } : process.env }));
  } catch (err) {
    const d = await diagnoseCriuLogFile(logFile);
    if (opts.signal?.aborted) {
      throw new CriuError('criu_failed', `criu ${op} was stopped by its caller (${errorMessage(opts.signal.reason)}; the last its log says: ${d.explanation}; log: ${logFile})`, 'stopped by its caller', logFile);
    }
    if (err instanceof TimeoutError) {
      throw new CriuError('criu_timeout', `criu ${op} did not finish within ${timeoutMs / 1000} s and was killed (log: ${logFile}; last error: ${d.explanation})`, d.explanation, logFile);
    }
    if (err instanceof CommandError && err.result.signal !== null) {
      // Its log just stops: what it says last is where criu was, not why it ended.
      const why = `criu was killed by ${err.result.signal}`;
      throw new CriuError('criu_failed', `criu ${op} failed: ${why} (the last its log says: ${d.explanation}; log: ${logFile})`, why, logFile);
    }
    if (err instanceof CommandError) {
      throw new CriuError('criu_failed', `criu ${op} failed: ${d.explanation} (log: ${logFile})`, d.explanation, logFile);
    }
    throw new CriuError('criu_unavailable', `criu ${op} could not start: ${(err as Error).message} (run npm run setup)`, (err as Error).message, logFile);
  }
  return (performance.now() - started) / 1000;
}

/** criu dump's arguments for these options, every kind of dump alike. */
function dumpArgv(bin: CriuBinary, opts: DumpOptions): string[] {
  // A connection the server has not accepted yet (its accept queue: a busy server, a browser's parallel requests)
  // fails a dump with "In-flight connection" otherwise: left out, its client sees it reset and connects again.
  const args = ['dump', '-t', String(opts.pid), '-D', opts.imagesDir, ...commonArgs(bin, opts.logFile, opts.actionScript, opts.fileValidation, opts.logLevel), '--skip-in-flight'];
  if (opts.leaveRunning) args.push('--leave-running');
  if (opts.externalNetnsIno !== undefined) args.push('--external', `net[${opts.externalNetnsIno}]:${EXTERNAL_NETNS_KEY}`);
  if (opts.extraArgs) args.push(...opts.extraArgs);
  return args;
}

/** Dumps a process tree. Resolves with the seconds criu took; throws CriuError with the cause from the log. */
export async function dump(bin: CriuBinary, opts: DumpOptions): Promise<{ seconds: number }> {
  await mkdir(opts.imagesDir, { recursive: true });
  const args = dumpArgv(bin, opts);
  const seconds = await runCriu(bin, 'dump', args, opts.logFile, { timeoutMs: opts.timeoutMs ?? 300_000, signal: opts.signal, env: opts.env, onSpawn: opts.onStarted, ahead: opts.ahead });
  return { seconds };
}

/** Restores a tree detached from criu. Resolves with the restored root's host pid. */
export async function restore(bin: CriuBinary, opts: RestoreOptions): Promise<{ pid: number; seconds: number }> {
  // criu refuses to overwrite a pidfile, and a stale one would name the wrong process.
  await rm(opts.pidFile, { force: true });
  const args = ['restore', '-D', opts.imagesDir, '-d', '--pidfile', opts.pidFile, ...commonArgs(bin, opts.logFile, opts.actionScript, opts.fileValidation, opts.logLevel)];
  for (const e of opts.externals ?? []) args.push('--external', e);
  if (opts.lazyPages) args.push('--lazy-pages');
  if (opts.extraArgs) args.push(...opts.extraArgs);
  // criu takes the namespace to join as an inherited descriptor (fd 3 of its own), named by the dump's key.
  const netns = opts.joinNetns === undefined ? undefined : await open(opts.joinNetns, 'r').catch((err: unknown) => {
    throw new CriuError('criu_failed', `criu restore needs the network namespace ${opts.joinNetns}, which cannot be opened: ${(err as Error).message}`, 'no namespace', opts.logFile);
  });
  if (netns) args.push('--inherit-fd', `fd[3]:${EXTERNAL_NETNS_KEY}`);
  let seconds: number;
  try {
    seconds = await runCriu(bin, 'restore', args, opts.logFile, { timeoutMs: opts.timeoutMs ?? 120_000, signal: opts.signal, env: opts.env, extraFds: netns ? [netns.fd] : undefined, ahead: opts.ahead });
  } finally {
    await netns?.close();
  }
  const pid = Number((await readFile(opts.pidFile, 'utf8')).trim());
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new CriuError('criu_failed', `criu restore wrote no pid to ${opts.pidFile} (log: ${opts.logFile})`, 'no pid', opts.logFile);
  }
  return { pid, seconds };
}

/** A `criu dump --lazy-pages` under way: the tree frozen, criu serving its memory. */
export interface LazyDump {
  pid: number;
  /**
   * Resolves (criu's seconds so far) once every image but the lazy pages is
   * written and the page server listens; rejects with a CriuError if criu
   * exits or times out first.
   */
  ready: Promise<number>;
  /**
   * criu's exit code. 0: the target said it was done (or, criu 4.2.1 being
   * lenient, closed the connection plainly), and criu killed the tree.
   * Otherwise the transfer failed and criu let the tree run again
   * (resumeAfterFailedDump removes what it may have left).
   */
  exited: Promise<number>;
  kill(): void;
}

/**
 * Starts a post-copy dump: criu freezes the tree, writes everything but its
 * anonymous memory, then serves that memory from `pageServer` until a
 * lazy-pages daemon has fetched all of it. Detached, so a transfer under way
 * outlives an agent restart.
 */
export async function startLazyDump(bin: CriuBinary, opts: DumpOptions & { pageServer: PageServerAt }): Promise<LazyDump> {
  await mkdir(opts.imagesDir, { recursive: true });
  const args = [...dumpArgv(bin, opts), '--lazy-pages', '--address', opts.pageServer.address, '--port', String(opts.pageServer.port)];
  const started = performance.now();
  const c = await spawnListeningCriu(bin, args, { env: opts.env });
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const ready = c.listening(timeoutMs).then(async (how) => {
    if (how === 'listening') return (performance.now() - started) / 1000;
    const d = await diagnoseCriuLogFile(opts.logFile);
    throw how === 'timeout'
      ? new CriuError('criu_timeout', `criu dump --lazy-pages did not start its page server within ${timeoutMs / 1000} s and was killed (log: ${opts.logFile}; last error: ${d.explanation})`, d.explanation, opts.logFile)
      : new CriuError('criu_failed', `criu dump --lazy-pages failed: ${d.explanation} (log: ${opts.logFile})`, d.explanation, opts.logFile);
  });
  // Whoever awaits `exited` learns the rest; an unobserved rejection must not end the agent.
  ready.catch(() => undefined);
  return { pid: c.pid, ready, exited: c.exited, kill: c.kill };
}

/** A criu that says on its status fd when it listens (a page server, a lazy dump's page server). */
export interface ListeningCriu {
  pid: number;
  /** criu's exit code (128 when killed by a signal, 127 when it could not start). */
  exited: Promise<number>;
  kill(): void;
  /** 'listening' once criu wrote to its status fd; 'exit' or 'timeout' (then it was killed) if not. */
  listening(timeoutMs: number): Promise<'listening' | 'exit' | 'timeout'>;
}

/**
 * Starts criu with `--status-fd 3` appended, fd 3 a pipe read for the byte
 * criu writes once it listens. In a session of its own, so that a transfer
 * under way outlives an agent restart. A criu that cannot start at all
 * (spawn failed) reports 'exit' with exit code 127.
 */
export async function spawnListeningCriu(bin: CriuBinary, args: string[], opts: { env?: Record<string, string> } = {}): Promise<ListeningCriu> {
  const { cmd, args: full } = criuCommand(bin, [...args, '--status-fd', '3']);
  let c: Detached;
  try {
    c = await startDetached(cmd, full, { env: opts.env ? { ...process.env, ...opts.env } : process.env, statusFd: true });
  } catch {
    return { pid: -1, exited: Promise.resolve(127), kill: () => undefined, listening: () => Promise.resolve('exit') };
  }
  let ended = false;
  void c.exited.then(() => (ended = true));
  const kill = (): void => {
    if (!ended) killQuietly(c.pid);
  };
  const listening = async (timeoutMs: number): Promise<'listening' | 'exit' | 'timeout'> => {
    let timer: NodeJS.Timeout | undefined;
    const how = await Promise.race([
      c.status.then(() => 'listening' as const),
      c.exited.then(() => 'exit' as const),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (how === 'timeout') kill();
    return how;
  };
  return { pid: c.pid, exited: c.exited, kill, listening };
}
