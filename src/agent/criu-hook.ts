import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * hubshift's CRIU action script. At post-dump the session's tasks are still
 * frozen, so the server log copied then has exactly the size criu recorded
 * for it, and a restore elsewhere (or after the log grew) puts that copy back.
 * A dump that leaves the tasks stopped is not given the side-file directory:
 * stopped, they cannot write, and the agent copies the log after criu exits,
 * beside the capture's last writes (mkdir and cp run cold inside criu took
 * 0.01-0.02 s of a checkpoint after a dropped page cache). Such dumps (a
 * checkpoint, a stop-and-copy move) run this script only for an operator's own.
 * An operator's own script runs after it at every stage. A lazy (post-copy)
 * dump runs post-dump just before its page server starts, but criu 4.2 acts
 * on a failure there only once the target has every page and runs the
 * session: it resumes the source as well (two copies). So in a lazy dump
 * nothing here fails at post-dump: the agent copies the log itself
 * (copyFrozenLog) and the operator's script cannot veto the move.
 *
 * A checkpoint whose page images go through the agent's capture
 * (images/page-capture.ts) tells the capture at post-dump that criu has
 * closed every page image. A leave-running checkpoint then waits, the tasks
 * still frozen, until the capture has flushed the last page (their pages sit
 * in the pipes until read, so the tasks must not run before), and fails the
 * dump (criu then resumes the session) unless it did. A checkpoint that
 * leaves the tasks stopped (HUBSHIFT_PAGE_CAPTURE_STOPPED) does not wait:
 * the agent waits for the capture beside criu's last steps, and resumes the
 * stopped tasks itself if it failed; without an operator's script it tells
 * the capture itself once criu has exited.
 */
const HOOK = `#!/bin/sh
# Written by the hubshift agent; see src/agent/criu-hook.ts.
if [ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] && [ -n "$HUBSHIFT_SIDE_FILES_DIR" ]; then
  mkdir -p "$HUBSHIFT_SIDE_FILES_DIR" && cp -- "$HUBSHIFT_SESSION_LOG" "$HUBSHIFT_SIDE_FILES_DIR/server.log" || exit 1
fi
if [ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] && [ -n "$HUBSHIFT_PAGE_CAPTURE" ]; then
  : > "$HUBSHIFT_PAGE_CAPTURE/criu-done" || exit 1
  # Tasks left stopped: the agent waits for the capture itself.
  if [ -z "$HUBSHIFT_PAGE_CAPTURE_STOPPED" ]; then
    n=0
    while [ ! -e "$HUBSHIFT_PAGE_CAPTURE/status" ]; do
      n=$((n + 1))
      if [ "$n" -gt 60000 ]; then echo "hubshift: the page capture did not finish" >&2; exit 1; fi
      sleep 0.005
    done
    read -r status < "$HUBSHIFT_PAGE_CAPTURE/status"
    if [ "$status" != ok ]; then echo "hubshift: page capture: $status" >&2; exit 1; fi
  fi
fi
if [ -n "$HUBSHIFT_USER_ACTION_SCRIPT" ]; then
  if [ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] && [ -n "$HUBSHIFT_LAZY_DUMP" ]; then
    "$HUBSHIFT_USER_ACTION_SCRIPT"
    exit 0
  fi
  exec "$HUBSHIFT_USER_ACTION_SCRIPT"
fi
exit 0
`;

export async function installCriuHook(dataDir: string): Promise<string> {
  const path = join(dataDir, 'criu-hook.sh');
  await writeFile(path, HOOK, { mode: 0o700 });
  await chmod(path, 0o700);
  return path;
}
