import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SandboxError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import { sleep, waitFor } from '../util/exec.js';
import { childrenOf, isAlive, killQuietly } from '../util/proc.js';
import { withHugePageMalloc } from './huge-page-collapse.js';
import { serverMallocEnv, writeServerMallocConfig } from './server-malloc.js';
import { netnsPath } from './network.js';

/**
 * Debian's notebook server, run with Debian's python (the python3 first on
 * PATH may be another interpreter that cannot import it). {port} and {home}
 * are filled in; the token comes from $JUPYTER_TOKEN, never the command line.
 * Sqlite databases are in memory: a file a session holds open must not change
 * between dump and restore, and these would.
 */
const NOTEBOOK_OPTIONS = [
  '--no-browser',
  '--allow-root',
  '--ip=0.0.0.0',
  '--port={port}',
  '--notebook-dir={home}',
  '--NotebookNotary.db_file=:memory:',
  '--NotebookApp.shutdown_no_activity_timeout=0',
];
export const DEFAULT_SESSION_COMMAND = ['/usr/bin/python3', '-m', 'notebook', ...NOTEBOOK_OPTIONS];

/**
 * JupyterHub's single-user server (Debian's jupyterhub, on the same notebook
 * server), for sessions the hub starts: the hub's environment tells it its
 * prefix, its token and the hub's API; the address is the session's own.
 */
export const HUB_SESSION_COMMAND = ['/usr/bin/python3', '/usr/bin/jupyterhub-singleuser', ...NOTEBOOK_OPTIONS];

export interface SessionPaths {
  dir: string;
  log: string;
  runtime: string;
  ipython: string;
  /** Jupyter config read by the server as it starts (server-malloc.ts). */
  jupyterConfig: string;
}

/** A session's files: where its record says (they follow it between nodes), else under this agent's data directory. */
export function sessionPaths(dataDir: string, s: { id: string; filesDir?: string }): SessionPaths {
  const dir = s.filesDir ?? join(dataDir, 'sessions', s.id);
  return { dir, log: join(dir, 'server.log'), runtime: join(dir, 'runtime'), ipython: join(dir, 'ipython'), jupyterConfig: join(dir, 'jupyter-config') };
}

/** Where criu restore writes the restored server's host pid: beside the image directory, in the restore's work directory. */
export function restoredPidFile(imagesDir: string): string {
  return join(imagesDir, '..', 'restored.pid');
}

/**
 * The host pid of session `sessionId`'s server as a restore's pid file names
 * it, if that process lives and is that server (its environment names the
 * session: a pid read from a file may have been reused); else null.
 */
export async function restoredServerPid(imagesDir: string, sessionId: string): Promise<number | null> {
  const text = await readFile(restoredPidFile(imagesDir), 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  return (await isSessionProcess(pid, sessionId)) && (await isAlive(pid)) ? pid : null;
}

/** Whether process `pid` is one of session `sessionId`'s (its launcher, server or a kernel: its environment names the session). */
export async function isSessionProcess(pid: number, sessionId: string): Promise<boolean> {
  const env = await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '');
  return env.split('\0').includes(`HUBSHIFT_SESSION_ID=${sessionId}`);
}

export function homeDir(dataDir: string, user: string): string {
  return join(dataDir, 'homes', user);
}

/** The directories and files a session's server needs. Synchronously: a restore does this in a move's frozen window (see placeSideFiles). */
export async function prepareSessionFiles(paths: SessionPaths, home: string): Promise<void> {
  mkdirSync(paths.runtime, { recursive: true, mode: 0o700 });
  mkdirSync(join(paths.ipython, 'profile_default'), { recursive: true, mode: 0o700 });
  mkdirSync(home, { recursive: true, mode: 0o700 });
  writeFileSync(join(paths.ipython, 'profile_default', 'ipython_config.py'), "c.HistoryManager.hist_file = ':memory:'\n");
  writeServerMallocConfig(paths.jupyterConfig);
  // The log can hold the server's token: owner-only, created before the server opens it.
  writeFileSync(paths.log, '', { flag: 'a', mode: 0o600 });
}

export function sessionCommand(template: readonly string[], session: Pick<Session, 'home' | 'network'>): string[] {
  return template.map((a) => a.replaceAll('{port}', String(session.network.port)).replaceAll('{home}', session.home));
}

export function sessionEnv(session: Pick<Session, 'id' | 'user' | 'home' | 'token' | 'env'>, paths: SessionPaths, opts: { hugePages: boolean }): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    ...session.env,
    ...(opts.hugePages ? { GLIBC_TUNABLES: withHugePageMalloc(session.env.GLIBC_TUNABLES), ...serverMallocEnv(session.env, paths.jupyterConfig) } : {}),
    HOME: session.home,
    USER: session.user,
    JUPYTER_TOKEN: session.token,
    JUPYTER_RUNTIME_DIR: paths.runtime,
    IPYTHONDIR: paths.ipython,
    HUBSHIFT_SESSION_ID: session.id,
    HUBSHIFT_SESSION_LOG: paths.log,
  };
}

/** The session's server is PID 1 of its PID namespace (launchSession): criu names its images by that pid. */
export const SERVER_VPID = 1;

/**
 * Starts the session's server as PID 1 of a new PID namespace inside the
 * session's network namespace. Its output goes to a log file that only it
 * holds (criu refuses a restore when a file it had open changed size, and the
 * launcher's own output would change it). Returns the server's host pid.
 */
export async function launchSession(command: readonly string[], env: Record<string, string>, cwd: string, sessionId: string): Promise<number> {
  const child = spawn(
    'nsenter',
    [`--net=${netnsPath(sessionId)}`, '--', 'unshare', '--pid', '--fork', '--', 'setsid', 'sh', '-c', 'exec >>"$HUBSHIFT_SESSION_LOG" 2>&1 </dev/null; exec "$@"', 'sh', ...command],
    { detached: true, stdio: 'ignore', env, cwd },
  );
  child.unref();
  const launcher = child.pid;
  if (launcher === undefined) throw new SandboxError('could not start nsenter (is util-linux installed? run npm run setup)');
  try {
    return await waitFor('the session process to start', async () => {
      if (!(await isAlive(launcher))) throw new SandboxError(`the session launcher exited at once; see ${env.HUBSHIFT_SESSION_LOG}`);
      return (await childrenOf(launcher))[0];
    }, { timeoutMs: 10_000, intervalMs: 10 });
  } catch (err) {
    killQuietly(launcher);
    throw err;
  }
}

/** Kills a session's whole PID namespace (killing its init kills every process in it). */
export async function killSession(pid: number): Promise<void> {
  killQuietly(pid, 'SIGKILL');
  for (let i = 0; i < 200 && (await isAlive(pid)); i++) await sleep(10);
}
