import type { PageServerAt } from '../core/checkpoint.js';
import { LAZY_HANDOVER_LINE, lazyPagesFiles } from '../criu/lazy-pages.js';
import { incomingImages } from './incoming-copies.js';
import { netnsName, stagingNetworkNames } from './network.js';
import { restoredPidFile } from './sandbox.js';
import { PY_PROCESS_HELPERS } from '../util/proc.js';
import { startIdleGuard, type IdleGuard } from '../util/idle-guard.js';

/**
 * The guard of a move in, started as its stream opens (while the source
 * still dumps: its interpreter's start stays out of the downtime) and armed
 * by armIncomingGuard. Its command line names `work` (stopIncomingGuard).
 */
export function prestartIncomingGuard(work: string): IdleGuard {
  return startIdleGuard(`hubshift-incoming-guard=${work}`);
}

/**
 * Arms the guard of a session being moved in, before criu restore runs:
 * after `ms` it kills the copy and drops its network namespace. Detached,
 * so it outlives this agent: a target that dies mid-move (even inside criu
 * restore, which finishes without it) never leaves a copy holding the
 * session's address. It reads what to act on when it fires, from files the
 * restore leaves in `work`: the copy's pid (restoredPidFile, once a criu
 * restore still running there has ended, `restoreWaitMs` at most; killed
 * only if that process is the session's server) and, post-copy (`pageServer`), the
 * lazy-pages daemon's pid and log (lazyPagesFiles).
 *
 * Post-copy, a copy whose daemon told the source it is done (see
 * lazyTransferHandedOver) is the session's only one: the source's criu has
 * ended its own. It is left alone, and a restarted agent runs it
 * (settleIncoming). Otherwise the daemon's connection is reset and the
 * daemon killed first, so the source's criu sees the transfer fail and
 * resumes its copy; the log is read again after, since the daemon may have
 * handed over in between. Python: one process (a shell would leave its
 * sleep behind when killed). Returns its pid.
 */
export function armIncomingGuard(guard: IdleGuard, sessionId: string, work: string, ms: number, pageServer: PageServerAt | undefined, restoreWaitMs = 60_000): number | null {
  const images = incomingImages(work);
  const daemon = lazyPagesFiles(images);
  const lazy = pageServer === undefined ? '' : `def handed_over():
    try:
        with open(${JSON.stringify(daemon.log)}, 'rb') as f:
            f.seek(0, 2); f.seek(max(0, f.tell() - 4096)); last = f.read().rstrip().split(b'\\n')[-1]
    except OSError: return False
    return ${JSON.stringify(LAZY_HANDOVER_LINE)}.encode() in last
if handed_over(): sys.exit(0)
d = read(${JSON.stringify(daemon.pid)}).strip()
if d.isdigit() and runs_with(int(d), 'lazy-pages', ${JSON.stringify(images)}):
    subprocess.run(['ss', '-K', 'dst', '${pageServer.address}:${pageServer.port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try: os.kill(int(d), signal.SIGKILL)
    except OSError: pass
    time.sleep(0.2)
if handed_over(): sys.exit(0)
`;
  const py = `import os, signal, subprocess, sys, time
${PY_PROCESS_HELPERS}time.sleep(${ms / 1000})
${lazy}# A restore still running writes the pid file as it ends (its agent gone, criu finishes it): waited for, a while.
for _ in range(${Math.ceil(restoreWaitMs / 100)}):
    if not pids_with('restore', ${JSON.stringify(images)}): break
    time.sleep(0.1)
p = read(${JSON.stringify(restoredPidFile(images))}).strip()
if p.isdigit() and b'\\0HUBSHIFT_SESSION_ID=${sessionId}\\0' in b'\\0' + read(f'/proc/{int(p)}/environ'):
    os.kill(int(p), signal.SIGKILL)
for name in ('${netnsName(sessionId)}', '${stagingNetworkNames(sessionId).netns}'):
    subprocess.run(['ip', 'netns', 'del', name], stderr=subprocess.DEVNULL)
`;
  guard.arm(py);
  return guard.pid;
}
