import { spawn, type ChildProcess } from 'node:child_process';
import { PYTHON, pythonScriptArgs } from './proc.js';

/** stderr kept to explain a helper's failure: a Python traceback ends with the exception. */
const STDERR_TAIL = 2000;

/**
 * A Python helper: an inline script run by PYTHON (`-I -S`: nothing from the
 * environment or site-packages), its stdio piped. A helper that is started
 * ahead of need reads its job from stdin, and ends quietly when stdin closes
 * before one came (its parent has gone).
 */
export class PythonHelper {
  readonly child: ChildProcess;
  /** Set when the process could not be started. */
  error: NodeJS.ErrnoException | undefined;
  private stderr = '';

  constructor(script: string, args: readonly string[] = []) {
    this.child = spawn(PYTHON, pythonScriptArgs(script, ...args), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.once('error', (err: NodeJS.ErrnoException) => (this.error = err));
    // A helper that died before its job was written: the job's write fails, and its exit says why.
    this.child.stdin?.on('error', () => undefined);
    this.child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-STDERR_TAIL)));
  }

  /** Neither failed to start nor ended. */
  get usable(): boolean {
    return !this.error && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last line the helper wrote to stderr, or "". */
  get lastWords(): string {
    return this.stderr.trim().split('\n').pop() ?? '';
  }
}

/** Whether a spawn error means the interpreter is not there (the caller then does without the helper). */
export const interpreterMissing = (err: NodeJS.ErrnoException): boolean => err.code === 'ENOENT';

/**
 * Keeps helpers started ahead of need, so that the work they serve does not
 * wait for Python to start (0.03-0.05 s here). A taken helper is replaced a
 * moment after it ends, not while the work it serves still runs.
 */
export class WaitingHelpers {
  private readonly waiting: PythonHelper[] = [];
  /** Set by warm(), cleared by close(): whether helpers are kept waiting. */
  private active = false;

  constructor(
    private readonly start: () => PythonHelper,
    /** How many wait at most. */
    readonly keep = 1,
  ) {}

  /** The waiting helpers' pids. */
  get waitingPids(): number[] {
    return this.waiting.flatMap((h) => (h.child.pid === undefined ? [] : [h.child.pid]));
  }

  /** Starts helpers until `keep` wait, and keeps that many from then on. Until then, take() starts each helper when asked. */
  warm(): void {
    this.active = true;
    while (this.waiting.length < this.keep) this.waiting.push(this.start());
  }

  /** A waiting helper that is still alive, else a new one. */
  take(): PythonHelper {
    let got: PythonHelper | undefined;
    while (!got && this.waiting.length > 0) {
      const h = this.waiting.shift() as PythonHelper;
      if (h.usable) got = h;
      else h.child.kill('SIGKILL');
    }
    got ??= this.start();
    if (this.active) got.child.once('close', () => setTimeout(() => this.active && this.warm(), 500).unref());
    return got;
  }

  /** Ends the waiting helpers (their owner is stopping); none is started again unless warm() is called. */
  close(): void {
    this.active = false;
    for (const h of this.waiting.splice(0)) h.child.kill('SIGKILL');
  }
}
