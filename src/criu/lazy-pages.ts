import { existsSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CriuError, errorMessage } from '../core/errors.js';
import { startDetached, waitFor, type Detached } from '../util/exec.js';
import { resetConnectionsTo } from '../util/tcp.js';
import { startIdleGuard } from '../util/idle-guard.js';
import { PY_PROCESS_HELPERS, killQuietly, processesWithArgs } from '../util/proc.js';
import { criuCommand, type CriuBinary } from './binary.js';
import { diagnoseCriuLogFile } from './log.js';
import type { WaitingCriu } from './waiting-criu.js';
import type { PageServerAt } from '../core/checkpoint.js';

export interface LazyPagesDaemon {
  pid: number;
  /** Resolves when the daemon has served every page and exited (0), or failed (other codes). */
  exited: Promise<number>;
  /** Ends the daemon; a post-copy daemon's transfer is broken first (see breakLazyTransfer). */
  kill(): void;
  /** Whether kill() was called: a post-copy transfer broken on purpose, whatever the log says. */
  readonly broken: boolean;
  /**
   * Says that criu restore is about to start and connect: call just before
   * spawning it. A daemon never claimed is ended by its orphan guard.
   */
  claim(): void;
}

/**
 * How long a daemon may wait for its restore. The daemon waits for ever for
 * a restore to connect, and is detached (it outlives an agent restart while
 * it serves a running session); an agent that dies between starting it and
 * starting criu restore would leave it waiting. A restore connects within a
 * second of its start.
 */
const ORPHAN_AFTER_MS = 15_000;
const CLAIMED = 'lazy-pages.claimed';
const PID_FILE = 'lazy-pages.pid';
const LOG_LINK = 'lazy-pages.log';

/**
 * Where the daemon serving `imagesDir` is named, beside the directory (not
 * in it: the directory may be kept as a checkpoint): its pid, a link to its
 * log, and the mark that a restore claimed it. Whoever settles a restore its agent did not
 * live to finish (an orphan guard, a move's guard, a restarted agent) finds
 * the daemon, and whether it handed its transfer over, by these.
 */
export function lazyPagesFiles(imagesDir: string): { pid: string; log: string; claimed: string } {
  return { pid: join(imagesDir, '..', PID_FILE), log: join(imagesDir, '..', LOG_LINK), claimed: join(imagesDir, '..', CLAIMED) };
}

/** The pid of the lazy-pages daemon serving `imagesDir`, if one runs (the process with those arguments). */
export async function lazyDaemonServing(imagesDir: string): Promise<number | null> {
  return (await processesWithArgs(['lazy-pages', imagesDir]))[0] ?? null;
}

/**
 * A detached process that ends the daemon after `afterMs` unless a restore
 * claimed it (the file CLAIMED beside its image directory). Started before
 * the daemon, which may not exist yet: the agent writes the daemon's pid
 * (PID_FILE, beside the directory) as soon as its spawn returns; an agent
 * killed within the spawn leaves no pid, and then the guard looks for the
 * process serving this directory (the move's or restore's own, named by no
 * other). Only a process that is that daemon (`criu lazy-pages` with this
 * directory among its arguments) is killed. Python: one process, no shell.
 */
function startOrphanGuard(imagesDir: string, afterMs: number): number | undefined {
  const files = lazyPagesFiles(imagesDir);
  const d = JSON.stringify(imagesDir);
  const py = `${PY_PROCESS_HELPERS}time.sleep(${afterMs / 1000})
if os.path.exists(${JSON.stringify(files.claimed)}): sys.exit(0)
p = read(${JSON.stringify(files.pid)}).strip()
# Killed while it started the daemon, before writing its pid: the daemon serving this directory, if any.
for pid in ([int(p)] if p.isdigit() else pids_with('lazy-pages', ${d})):
    if runs_with(pid, 'lazy-pages', ${d}): os.kill(pid, signal.SIGKILL)
`;
  // Tagged with its directory, as a move's guard is with its work directory.
  const guard = startIdleGuard(`hubshift-orphan-guard=${imagesDir}`);
  guard.arm(py);
  return guard.pid ?? undefined;
}

/**
 * Starts `criu lazy-pages` serving the page images of a local, verified image
 * directory, and waits until its socket is there (a restore that connects
 * earlier fails). A restore with --lazy-pages then returns as soon as the
 * processes exist; their pages arrive on first touch and in the background.
 * The directory must stay until `exited` resolves. `guardedElsewhere`: a
 * guard of the caller's own ends the daemon if no restore claims it, and
 * the orphan guard is not started.
 */
export async function startLazyPages(
  bin: CriuBinary,
  imagesDir: string,
  logFile: string,
  opts: { timeoutMs?: number; pageServer?: PageServerAt; orphanAfterMs?: number; guardedElsewhere?: boolean; ahead?: WaitingCriu } = {},
): Promise<LazyPagesDaemon> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  // With a page server (post-copy), pages come over the network from the source's criu dump instead of local images.
  const remote = opts.pageServer ? ['--page-server', '--address', opts.pageServer.address, '--port', String(opts.pageServer.port)] : [];
  // -v4: its fault lines, which name the pages to restore eagerly, or send ahead, next time (agent/hot-pages.ts);
  // and from -v3 the line that says the daemon told the page server it is done (see lazyTransferHandedOver).
  const daemonArgs = ['lazy-pages', '-D', imagesDir, '-o', logFile, '-v4', ...remote];
  const { cmd, args } = criuCommand(bin, daemonArgs);
  // A move's own guard (armIncomingGuard) ends a daemon no restore claimed: a second interpreter would start on its restore's path.
  const guard = opts.guardedElsewhere ? undefined : startOrphanGuard(imagesDir, opts.orphanAfterMs ?? ORPHAN_AFTER_MS);
  let d: Pick<Detached, 'pid' | 'exited'>;
  try {
    // In a criu started ahead where one waits (on a post-copy target, the daemon starts in the frozen window).
    d = opts.ahead?.launch(daemonArgs) ?? (await startDetached(cmd, args));
  } catch (err) {
    if (guard !== undefined) killQuietly(guard);
    throw new CriuError('criu_unavailable', `criu lazy-pages could not start: ${errorMessage(err)} (run npm run setup)`, 'spawn failed', logFile);
  }
  const { pid, exited } = d;
  // At once, synchronously: the guard started before the daemon finds it by this.
  const files = lazyPagesFiles(imagesDir);
  writeFileSync(files.pid, String(pid));
  rmSync(files.log, { force: true });
  symlinkSync(logFile, files.log);
  let gone = false;
  void exited.then(() => (gone = true));
  try {
    await waitFor('criu lazy-pages to listen', async () => {
      if (gone) {
        const d = await diagnoseCriuLogFile(logFile);
        throw new CriuError('criu_failed', `criu lazy-pages exited at start: ${d.explanation} (log: ${logFile})`, d.explanation, logFile);
      }
      return existsSync(join(imagesDir, 'lazy-pages.socket')) ? true : undefined;
    }, { timeoutMs, intervalMs: 2 });
  } catch (err) {
    killQuietly(pid);
    if (guard !== undefined) killQuietly(guard);
    throw err;
  }
  const pageServer = opts.pageServer;
  let broken = false;
  return {
    pid,
    exited,
    kill: () => {
      broken = true;
      if (pageServer) void breakLazyTransfer(pageServer, pid);
      else killQuietly(pid);
    },
    get broken() {
      return broken;
    },
    claim: () => {
      writeFileSync(files.claimed, '');
      if (guard !== undefined) killQuietly(guard);
    },
  };
}

/**
 * Whether a post-copy lazy-pages daemon told the source's page server it was
 * done. criu's daemon does that once it stops handling requests, even after
 * an error, and the source's criu then counts the transfer complete and ends
 * its frozen copy. So a daemon that exited non-zero (or was killed) after
 * this line leaves the restored copy as the only one: it must be kept.
 * Read from the daemon's log (written at -v3; the line is criu's own).
 */
export async function lazyTransferHandedOver(logFile: string): Promise<boolean> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  // The last line: an error after it (the page server gone, "doesn't answer") means the source did not take it.
  const last = text.trimEnd().split('\n').at(-1) ?? '';
  return last.includes(LAZY_HANDOVER_LINE);
}

/**
 * Breaks a post-copy transfer from the target's side so that the source's
 * criu sees it fail: its page server takes a plain close of the connection
 * as the end of a good transfer (criu 4.2.1 checks the final handshake only
 * when receiving pages) and would kill the frozen source. So the daemon's
 * connection is reset first (`ss -K`, the kernel's SOCK_DESTROY: the peer
 * gets an RST), then the daemon is killed.
 */
export async function breakLazyTransfer(pageServer: PageServerAt, daemonPid: number): Promise<void> {
  await resetConnectionsTo(pageServer);
  killQuietly(daemonPid);
}

/** What criu 4.2's lazy-pages daemon logs (at -v3) when it tells the page server it is done. */
export const LAZY_HANDOVER_LINE = 'page-xfer: Disconnect from the page server';
