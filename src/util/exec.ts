import { spawn, type SpawnOptions } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { TimeoutError } from '../core/errors.js';
import { isAlive, killQuietly, processTree } from './proc.js';
import { SpawnHelper, type HelperExit, type HelperRun } from './spawn-helper.js';

/** An instant of this process's performance.now() as an ISO 8601 time. */
export function isoTimeOf(perfNow: number): string {
  return new Date(performance.timeOrigin + perfNow).toISOString();
}

export interface RunOptions {
  /** Kill the command (its whole process group) after this long. Default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  /** Treat a non-zero exit as success (the caller inspects `code`). Default false. */
  allowFailure?: boolean;
  /** Open descriptors the command inherits as fd 3, 4, ... in this order. */
  extraFds?: number[];
  /** Called once the command has started (its process exists), before it ends. */
  onSpawn?: () => void;
}

export interface RunResult {
  code: number;
  /** The signal that ended the command, if one did (code is then 128). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: RunResult,
  ) {
    super(`${command} exited ${result.code}: ${result.stderr.trim().split('\n').slice(-3).join(' | ') || result.stdout.trim().slice(-300)}`);
    this.name = 'CommandError';
  }
}

let helper: SpawnHelper | null = null;

/**
 * From now on run() starts commands from a spawn helper (spawn-helper.ts:
 * a fork of this process costs it more the more memory it holds), started
 * here, once. Where the helper is gone, run() spawns them itself again.
 */
export function useSpawnHelper(): void {
  helper ??= SpawnHelper.start();
}

/** The spawn helper's pid, if run() uses one. */
export function spawnHelperPid(): number | undefined {
  return helper?.alive ? helper.pid : undefined;
}

/**
 * Runs a command from an argument list (never through a shell), with a timeout
 * that kills its whole process group, so a hung child cannot outlive the call.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  // Aborted already: an abort listener added now would never fire, and the command would run unbounded by it.
  if (opts.signal?.aborted) return Promise.reject(opts.signal.reason instanceof Error ? opts.signal.reason : new Error(`${cmd} aborted before it started`));
  return helper?.alive ? runFromHelper(helper, cmd, args, opts) : runHere(cmd, args, opts);
}

/** A long-lived command started by startDetached. */
export interface Detached {
  pid: number;
  /** Its exit code: 128 when a signal ended it; 127 when it could not be known (its starter, the spawn helper, went away first). */
  exited: Promise<number>;
  /** With statusFd: resolves once it wrote to its fd 3 (criu's --status-fd); pending otherwise. */
  status: Promise<void>;
  /** With inputLater: writes `data` to its stdin and closes it; once, nothing after it ended. */
  end(data: string): void;
}

/**
 * Starts a long-lived command (a daemon: criu's lazy dump, its lazy-pages
 * daemon) in a session of its own, its output to /dev/null, from the spawn
 * helper where run() uses one. Rejects if it could not start.
 */
export async function startDetached(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; statusFd?: boolean; inputLater?: boolean } = {}): Promise<Detached> {
  const c = spawnLongLived(cmd, args, opts);
  const pid = await c.pid;
  return { pid, exited: detachedExit(pid, c.exit), status: c.status, end: c.end };
}

/**
 * A long-lived command started in a session of its own, its output to
 * /dev/null: from the spawn helper where run() uses one, else forked here
 * (`unrefInput`: its stdin then does not keep this process alive either).
 */
function spawnLongLived(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; statusFd?: boolean; inputLater?: boolean; unrefInput?: boolean }): Pick<HelperRun, 'pid' | 'exit' | 'status' | 'end'> {
  const env = opts.env ?? process.env;
  if (helper?.alive) return helper.run({ argv: [cmd, ...args], env, capture: false, statusFd: opts.statusFd, inputLater: opts.inputLater });
  const child = spawn(cmd, args, { detached: true, stdio: [opts.inputLater ? 'pipe' : 'ignore', 'ignore', 'ignore', ...(opts.statusFd ? (['pipe'] as const) : [])], env });
  child.unref();
  if (opts.unrefInput) (child.stdin as (Writable & { unref?: () => void }) | null)?.unref?.();
  // A command gone before its input breaks the pipe: nothing to tell it then.
  child.stdin?.on('error', () => undefined);
  const exit = new Promise<HelperExit>((resolve, reject) => {
    child.once('exit', (code, signal) => resolve({ code, signal, stdout: '', stderr: '' }));
    child.once('error', reject);
  });
  const pid = new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid as number));
    child.once('error', reject);
  });
  // Awaited through pid by the callers: a command that never started has nothing to wait for.
  exit.catch(() => undefined);
  const fd3 = child.stdio[3] as Readable | null | undefined;
  const status = new Promise<void>((resolve) => fd3?.once('data', () => resolve()));
  // Read once, then let go: it must not keep this process alive.
  void status.then(() => fd3?.destroy());
  void exit.finally(() => fd3?.destroy()).catch(() => undefined);
  return { pid, exit, status, end: (data) => child.stdin?.end(data) };
}

/**
 * A command started ahead of need that waits for its input on stdin before
 * it does anything (criu --args-from-stdin): the work it is then given does
 * not wait for a fork, an exec and the loading of its libraries.
 */
export interface StartedAhead {
  pid: number;
  /** Whether it has ended (its work done, or killed while it waited). */
  readonly ended: boolean;
  /**
   * Writes `input` to its stdin and closes it, then waits for it as run()
   * waits for a command it started (`onSpawn` called at once; the same
   * timeout, results and errors). Once. Its output is not kept.
   */
  run(input: string, opts?: Pick<RunOptions, 'timeoutMs' | 'signal' | 'onSpawn' | 'allowFailure'>): Promise<RunResult>;
  /** Writes `input` to its stdin and closes it, and leaves it running as startDetached leaves a daemon. Once (either this or run). */
  launch(input: string): Pick<Detached, 'pid' | 'exited'>;
  /** Kills it unless it has ended. */
  cancel(): void;
}

/** Starts a StartedAhead in a session of its own, from the spawn helper where run() uses one. Rejects if it could not start. */
export async function startAhead(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<StartedAhead> {
  // Neither the waiting command nor its stdin keeps this process alive.
  const c = spawnLongLived(cmd, args, { env: opts.env, inputLater: true, unrefInput: true });
  const pid = await c.pid;
  let ended = false;
  c.exit.then(
    () => (ended = true),
    () => (ended = true),
  );
  let given = false;
  const give = (input: string): void => {
    if (given) throw new Error(`${cmd} (pid ${pid}), started ahead, was given its input already`);
    given = true;
    c.end(input);
  };
  return {
    pid,
    get ended() {
      return ended;
    },
    run(input, runOpts = {}) {
      try {
        give(input);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      runOpts.onSpawn?.();
      return finish(cmd, args, runOpts, c.pid, c.exit);
    },
    launch(input) {
      give(input);
      return { pid, exited: detachedExit(pid, c.exit) };
    },
    cancel() {
      if (!ended) killQuietly(pid);
    },
  };
}

/**
 * A detached command's exit code (Detached.exited): 128 when a signal ended it. Where the spawn helper that started
 * it went away first, its exit code is lost with it: 127, not before the command itself is gone (a daemon still
 * serving pages).
 */
function detachedExit(pid: number, exit: Promise<HelperExit>): Promise<number> {
  return exit.then(
    (e) => e.code ?? 128,
    async () => {
      while (await isAlive(pid)) await sleep(200);
      return 127;
    },
  );
}

/** Kills a command's process group and every descendant: criu's restored tasks take their own session and group. */
function killCommand(pid: number): void {
  void processTree(pid).then((tree) => {
    for (const p of tree.reverse()) killQuietly(p);
    killQuietly(-pid);
  });
}

/** How run() ends, whoever started the command. */
function settle(cmd: string, args: readonly string[], opts: RunOptions, timedOut: boolean, timeoutMs: number, code: number | null, sig: NodeJS.Signals | null, stdout: string, stderr: string): RunResult {
  const command = [cmd, ...args].join(' ');
  if (timedOut) throw new TimeoutError(`${command} did not finish within ${timeoutMs} ms and was killed`);
  if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error(`${command} aborted`);
  const result = { code: code ?? (sig ? 128 : 1), signal: sig, stdout, stderr };
  if (result.code !== 0 && !opts.allowFailure) throw new CommandError(command, result);
  return result;
}

/** Where the spawn helper, or a command, opens what this process holds open as `fds`: through /proc, as the same files. */
export function fdPathsOf(fds: readonly number[]): string[] {
  return fds.map((fd) => `/proc/${process.pid}/fd/${fd}`);
}

async function runFromHelper(h: SpawnHelper, cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const c = h.run({ argv: [cmd, ...args], env: opts.env ?? process.env, cwd: opts.cwd, input: opts.input, fdPaths: opts.extraFds && fdPathsOf(opts.extraFds) });
  if (opts.onSpawn) void c.pid.then(opts.onSpawn, () => undefined);
  return finish(cmd, args, opts, c.pid, c.exit);
}

/** Waits for a started command as run() does: its tree killed after the timeout or on abort, its end settled alike. */
async function finish(cmd: string, args: readonly string[], opts: RunOptions, pid: Promise<number>, exit: Promise<HelperExit>): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let timedOut = false;
  const kill = (): void => void pid.then(killCommand, () => undefined);
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, timeoutMs);
  opts.signal?.addEventListener('abort', kill, { once: true });
  try {
    const e = await exit;
    return settle(cmd, args, opts, timedOut, timeoutMs, e.code, e.signal, e.stdout, e.stderr);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', kill);
  }
}

function runHere(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const spawnOpts: SpawnOptions = {
    detached: true,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', ...(opts.extraFds ?? [])],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, spawnOpts);
    if (opts.onSpawn) child.once('spawn', opts.onSpawn);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const killGroup = (): void => {
      if (child.pid !== undefined) killCommand(child.pid);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    const onAbort = (): void => killGroup();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    child.on('error', (err) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      try {
        resolve(settle(cmd, args, opts, timedOut, timeoutMs, code, sig, stdout, stderr));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = (): void => {
      clearTimeout(t);
      reject(abortReason(signal as AbortSignal));
    };
    // The listener goes when the time is up: a long-lived signal (the agent's own) polled every few hundred ms
    // otherwise gathered one a sleep, for as long as the agent ran.
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

/** Polls `check` until it returns a value other than undefined, or throws TimeoutError naming `what`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  opts: { timeoutMs: number; intervalMs?: number; signal?: AbortSignal },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) throw new TimeoutError(`${what} did not happen within ${opts.timeoutMs} ms`);
    await sleep(opts.intervalMs ?? 50, opts.signal);
  }
}
