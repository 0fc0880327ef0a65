import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * hubshift's CRIU action script. At post-dump the session's tasks are still
 * frozen, so the server log copied then has exactly the size criu recorded
 * for it, and a restore elsewhere (or after the log grew) puts that copy back.
 * An operator's own script runs after it at every stage. In a lazy
 * (post-copy) dump, post-dump comes only after the target has every page and
 * runs the session: a failure there would make criu resume the source too
 * (two copies), so the operator's script cannot veto it there: its failure
 * is ignored.
 */
const HOOK = `#!/bin/sh
# Written by the hubshift agent; see src/agent/criu-hook.ts.
if [ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] && [ -n "$HUBSHIFT_SIDE_FILES_DIR" ]; then
  mkdir -p "$HUBSHIFT_SIDE_FILES_DIR" && cp -- "$HUBSHIFT_SESSION_LOG" "$HUBSHIFT_SIDE_FILES_DIR/server.log" || exit 1
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
