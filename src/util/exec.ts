import { spawn, type SpawnOptions } from 'node:child_process';
import { TimeoutError } from '../core/errors.js';
import { killQuietly, processTree } from './proc.js';

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

/**
 * Runs a command from an argument list (never through a shell), with a timeout
 * that kills its whole process group, so a hung child cannot outlive the call.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const spawnOpts: SpawnOptions = {
    detached: true,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', ...(opts.extraFds ?? [])],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, spawnOpts);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    // Kill the group and every descendant: criu's restored tasks take their own
    // session and group, so the group alone would miss them.
    const killGroup = (): void => {
      const pid = child.pid;
      if (pid === undefined) return;
      void processTree(pid).then((tree) => {
        for (const p of tree.reverse()) killQuietly(p);
        killQuietly(-pid);
      });
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
      const command = [cmd, ...args].join(' ');
      if (timedOut) {
        reject(new TimeoutError(`${command} did not finish within ${timeoutMs} ms and was killed`));
        return;
      }
      if (opts.signal?.aborted) {
        reject(opts.signal.reason instanceof Error ? opts.signal.reason : new Error(`${command} aborted`));
        return;
      }
      const result = { code: code ?? (sig ? 128 : 1), signal: sig, stdout, stderr };
      if (result.code !== 0 && !opts.allowFailure) reject(new CommandError(command, result));
      else resolve(result);
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
