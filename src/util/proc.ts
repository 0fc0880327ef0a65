import { readFileSync, readdirSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';

// /proc is read synchronously here: its files are made in memory on each read, in microseconds, where a read
// through the thread pool costs a round trip of 0.1-1 ms; a session's tree (a dozen threads to look at) took
// 4-5 ms so, on the path of a post-copy move while the session is frozen.

/** The interpreter hubshift's own Python helpers run under (Debian's; `npm run setup` installs it). */
export const PYTHON = '/usr/bin/python3';

/** The arguments that run `script` as one of those helpers: isolated (-I) from the user's site and environment, without site (-S), which starts it faster. */
export function pythonScriptArgs(script: string, ...args: string[]): string[] {
  return ['-I', '-S', '-c', script, ...args];
}

/** The pid of the process tracing the one whose /proc/PID/status this is (criu, while it dumps it), or 0. */
export function tracerPid(status: string): number {
  return Number(/^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
}

/** Whether a pid exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  return isAliveNow(pid);
}

function isAliveNow(pid: number): boolean {
  const stat = readStatNow(pid);
  return stat !== null && procState(stat) !== 'Z';
}

/** /proc/PID/stat, or null when the process is gone. */
function readStatNow(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
}

/** The fields of a /proc/PID/stat line after the command name: state, ppid, pgrp, session, tty, tpgid, flags, ... */
function statFields(stat: string): string[] {
  // The command name is in parentheses and may itself contain spaces or ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The one-letter state from /proc/PID/stat (R, S, D, T, t, Z, ...). */
export function procState(stat: string): string {
  return statFields(stat)[0] ?? '?';
}

/** The kernel's PF_EXITING: the process has begun to exit (a killed PID-namespace init waits so for its tree to die). */
const PF_EXITING = 0x4;

/** Whether the process whose /proc/PID/stat this is has begun to exit, though it may not be a zombie yet. */
export function procExiting(stat: string): boolean {
  const flags = Number(statFields(stat)[6]);
  return Number.isInteger(flags) && (flags & PF_EXITING) !== 0;
}

/** Whether a pid exists, is not a zombie, and has not begun to exit. */
export function isRunningNow(pid: number): boolean {
  const stat = readStatNow(pid);
  return stat !== null && procState(stat) !== 'Z' && !procExiting(stat);
}

/** The direct children of a process, from /proc/PID/task/TID/children. */
export async function childrenOf(pid: number): Promise<number[]> {
  return childrenNow(pid);
}

function childrenNow(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
      for (const c of text.trim().split(/\s+/)) if (c) out.push(Number(c));
    } catch {
      /* task exited */
    }
  }
  return out;
}

/** A process and all its descendants, root first. */
export async function processTree(root: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift() as number;
    if (!isAliveNow(pid)) continue;
    out.push(pid);
    queue.push(...childrenNow(pid));
  }
  return out;
}

export function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

/** Pids of the processes whose arguments include every one of `args` (each a whole argument). */
export async function processesWithArgs(args: readonly string[]): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n));
  const found = await Promise.all(
    pids.map(async (p) => {
      const argv = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0');
      return args.every((a) => argv.includes(a)) ? Number(p) : null;
    }),
  );
  return found.filter((p): p is number => p !== null);
}

/**
 * processesWithArgs and its kin for the detached Python guards (they outlive
 * the agent, so they cannot call it): `read(path)` (b'' when it cannot be
 * read), `runs_with(pid, *args)` (every one of `args` a whole argument of
 * the process) and `pids_with(*args)`. Needs `import os`.
 */
export const PY_PROCESS_HELPERS = `def read(p):
    try:
        with open(p, 'rb') as f: return f.read()
    except OSError: return b''
def runs_with(pid, *args):
    a = read(f'/proc/{pid}/cmdline').split(b'\\0')
    return all(x.encode() in a for x in args)
def pids_with(*args):
    return [int(q) for q in os.listdir('/proc') if q.isdigit() and runs_with(q, *args)]
`;
