import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { z } from 'zod';
import { PYTHON, pythonScriptArgs } from './proc.js';

/**
 * Starts commands for this process from a small Python process of its own.
 *
 * Why: fork() copies the caller's page tables and marks every page it has
 * written copy-on-write. An agent holds ~130 MB: each command it started
 * took it 6-9 ms, and every page it wrote afterwards took a fault of its
 * own (128 MB of buffers written after one spawn: 61 ms, against 1.2 ms
 * without). A post-copy move ran three to five commands in its frozen
 * window. The helper (~10 MB, started while the agent is still small)
 * forks cheaply, and the agent's memory is left alone.
 *
 * One JSON line a command on its stdin; it answers with the command's pid,
 * then its exit and output. Descriptors to inherit are named by path and
 * land at 3, 4, ... in the command, as with spawn's `stdio`: the helper
 * keeps 3-9 open on /dev/null, so that nothing of its own takes them
 * between commands. Commands start in sessions of their own. When this
 * process's end of the pipe closes, the helper exits and leaves its
 * commands running, as a detached spawn would.
 */
const HELPER_PY = `
import json, os, subprocess, sys, threading
SLOTS = range(3, 10)
def park(fd):
    n = os.open('/dev/null', os.O_RDONLY)
    if n != fd:
        os.dup2(n, fd)
        os.close(n)
for fd in SLOTS:
    park(fd)
said = threading.Lock()
starting = threading.Lock()
def say(o):
    with said:
        sys.stdout.write(json.dumps(o) + '\\n')
        sys.stdout.flush()
def run(r):
    i = r['id']
    try:
        data = r.get('input')
        capture = subprocess.PIPE if r.get('capture', True) else subprocess.DEVNULL
        later = r.get('inputLater', False)
        status = None
        with starting:
            slots = []
            try:
                for path in r.get('fdPaths', []):
                    fd = os.open(path, os.O_RDONLY)
                    os.dup2(fd, SLOTS[len(slots)])
                    os.close(fd)
                    slots.append(SLOTS[len(slots)])
                if r.get('statusFd'):
                    status, w = os.pipe()
                    os.dup2(w, SLOTS[len(slots)])
                    os.close(w)
                    slots.append(SLOTS[len(slots)])
                p = subprocess.Popen(r['argv'], env=r['env'], cwd=r.get('cwd'), stdin=subprocess.PIPE if data is not None or later else subprocess.DEVNULL,
                                     stdout=capture, stderr=capture, start_new_session=True, pass_fds=tuple(slots))
            finally:
                for fd in slots:
                    park(fd)
    except Exception as e:
        if status is not None:
            os.close(status)
        say({'id': i, 'error': getattr(e, 'strerror', None) or str(e), 'errno': getattr(e, 'errno', None) or 0})
        return
    if later:
        held[i] = p
    say({'id': i, 'pid': p.pid})
    if status is not None:
        threading.Thread(target=watch, args=(i, status), daemon=True).start()
    if later:
        p.wait()
        held.pop(i, None)
        out, err = None, None
    else:
        out, err = p.communicate(data.encode() if data is not None else None)
    rc = p.returncode
    say({'id': i, 'code': rc if rc >= 0 else None, 'signal': -rc if rc < 0 else None, 'stdout': (out or b'').decode(errors='replace'), 'stderr': (err or b'').decode(errors='replace')})
def watch(i, fd):
    try:
        if os.read(fd, 1):
            say({'id': i, 'status': True})
    finally:
        os.close(fd)
def end(r):
    p = held.pop(r['id'], None)
    if p is None:
        return
    try:
        p.stdin.write(r['end'].encode())
        p.stdin.close()
    except OSError:
        pass
held = {}
for line in sys.stdin:
    r = json.loads(line)
    if 'argv' in r:
        threading.Thread(target=run, args=(r,), daemon=True).start()
    else:
        end(r)
`;

const Started = z.object({ id: z.number().int(), pid: z.number().int().positive() });
const Exited = z.object({ id: z.number().int(), code: z.number().int().nullable(), signal: z.number().int().nullable(), stdout: z.string(), stderr: z.string() });
const Failed = z.object({ id: z.number().int(), error: z.string(), errno: z.number().int() });
const Status = z.object({ id: z.number().int(), status: z.literal(true) });
const HelperMessage = z.union([Started, Exited, Failed, Status]);

export interface HelperExit {
  /** null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface HelperCommand {
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  /** Files the command inherits as fd 3, 4, ... (at most seven), opened read-only by the helper. */
  fdPaths?: readonly string[];
  /** Its output is kept and returned (default); false: it goes to /dev/null (a long-lived daemon's). */
  capture?: boolean;
  /** A pipe as the next descriptor after fdPaths' (3 without them): `status` resolves once the command writes to it. */
  statusFd?: boolean;
  /** Its stdin a pipe that HelperRun.end writes to and closes later (instead of `input`, given now). */
  inputLater?: boolean;
}

/** A command the helper runs: its pid once started, then how it ended. Both reject if it could not start. */
export interface HelperRun {
  pid: Promise<number>;
  exit: Promise<HelperExit>;
  /** With statusFd: resolves once the command wrote to it; pending otherwise. */
  status: Promise<void>;
  /** With inputLater: writes `data` to its stdin and closes it (once; nothing if it has ended). */
  end(data: string): void;
}

/** An error the helper reports for a command it could not start, with the errno's name (ENOENT, EACCES, ...). */
export class HelperSpawnError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'HelperSpawnError';
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (err: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

interface Waiting {
  pid: Deferred<number>;
  exit: Deferred<HelperExit>;
  status: Deferred<void>;
}

export class SpawnHelper {
  private readonly waiting = new Map<number, Waiting>();
  private next = 1;
  private gone: Error | null = null;

  private constructor(private readonly child: ChildProcessByStdio<Writable, Readable, null>) {
    createInterface({ input: child.stdout }).on('line', (line) => this.receive(line));
    child.stdin.on('error', () => undefined);
    child.on('error', (err) => this.end(new Error(`the spawn helper could not run: ${err.message}`)));
    child.on('exit', (code, sig) => this.end(new Error(`the spawn helper exited (${sig ?? code}); the commands it was running are left as they are`)));
    // It must not keep this process alive: commands under way keep their own promises pending until they end.
    child.unref();
    (child.stdout as Readable & { unref?: () => void }).unref?.();
  }

  /** Starts the helper (one fork of this process, best done while it is small). */
  static start(): SpawnHelper {
    return new SpawnHelper(spawn(PYTHON, pythonScriptArgs(HELPER_PY, 'hubshift-spawn-helper'), { stdio: ['pipe', 'pipe', 'ignore'] }));
  }

  /** Whether it still takes commands (else run() of util/exec.ts spawns them itself). */
  get alive(): boolean {
    return this.gone === null;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  run(cmd: HelperCommand): HelperRun {
    if ((cmd.fdPaths?.length ?? 0) + (cmd.statusFd ? 1 : 0) > 7) throw new Error('the spawn helper passes at most seven descriptors');
    const w: Waiting = { pid: deferred(), exit: deferred(), status: deferred() };
    // Awaited by the caller only to kill the command: a command that never started has nothing to kill.
    w.pid.promise.catch(() => undefined);
    const id = this.next++;
    if (this.gone) {
      fail(w, this.gone);
    } else {
      this.waiting.set(id, w);
      this.send({ id, argv: cmd.argv, env: cmd.env, cwd: cmd.cwd, input: cmd.input, fdPaths: cmd.fdPaths ?? [], capture: cmd.capture ?? true, statusFd: cmd.statusFd ?? false, inputLater: cmd.inputLater ?? false });
    }
    return { pid: w.pid.promise, exit: w.exit.promise, status: w.status.promise, end: (data) => this.send({ id, end: data }) };
  }

  private send(request: object): void {
    if (!this.gone) this.child.stdin.write(`${JSON.stringify(request)}\n`);
  }

  private receive(line: string): void {
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      return;
    }
    const parsed = HelperMessage.safeParse(json);
    if (!parsed.success) return;
    const m = parsed.data;
    const w = this.waiting.get(m.id);
    if (!w) return;
    if ('pid' in m) {
      w.pid.resolve(m.pid);
    } else if ('status' in m) {
      w.status.resolve();
    } else if ('error' in m) {
      this.waiting.delete(m.id);
      fail(w, new HelperSpawnError(m.error, errnoName(m.errno)));
    } else {
      this.waiting.delete(m.id);
      w.exit.resolve({ code: m.code, signal: m.signal === null ? null : signalName(m.signal), stdout: m.stdout, stderr: m.stderr });
    }
  }

  private end(err: Error): void {
    if (this.gone) return;
    this.gone = err;
    for (const w of this.waiting.values()) fail(w, err);
    this.waiting.clear();
  }
}

function fail(w: Waiting, err: Error): void {
  w.pid.reject(err);
  w.exit.reject(err);
}

function signalName(n: number): NodeJS.Signals {
  const found = Object.entries(constants.signals).find(([, v]) => v === n);
  return (found?.[0] ?? 'SIGKILL') as NodeJS.Signals;
}

function errnoName(n: number): string {
  return Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
}
