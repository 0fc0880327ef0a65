// What every criu run of the agent shares: the hook's environment, the action script, where its log goes.
import { join } from 'node:path';
import type { Session } from '../core/session.js';
import type { AgentContext } from './agent-context.js';
import { sessionPaths } from './sandbox.js';

/** How a dump uses the hook: it is lazy (post-copy), or its page images go through a capture (its control directory). */
export interface HookUse {
  lazy?: boolean;
  captureDir?: string;
  /**
   * criu leaves the tasks stopped (dumpArgs passes --leave-stopped): hubshift's hook has nothing to do (the agent copies the log and
   * tells the capture once criu has exited), and runs only before an operator's script, without waiting for the capture.
   */
  stopped?: boolean;
}

/** The hook's environment: a dump gives its side-file directory, or says it is lazy (post-copy). */
export function hookEnv(ctx: AgentContext, s: Session, dump?: HookUse & { sideDir: string }): Record<string, string> {
  const env: Record<string, string> = { HUBSHIFT_SESSION_LOG: sessionPaths(ctx.config.dataDir, s).log };
  // A lazy dump acts on a post-dump failure only after the last page, by resuming the source beside the target's
  // copy: its hook must not fail there (see criu-hook.ts), so the agent copies the log itself (copyFrozenLog).
  if (dump?.lazy) env.HUBSHIFT_LAZY_DUMP = '1';
  // Tasks left stopped cannot write their log: the agent copies it after criu exits, beside the capture's last writes,
  // instead of two processes run (cold, after a dropped cache) inside criu's post-dump stage.
  else if (dump && !dump.stopped) env.HUBSHIFT_SIDE_FILES_DIR = dump.sideDir;
  // The hook tells the capture that criu is done with the pipes, and waits for its last page unless the tasks stay stopped.
  if (dump?.captureDir) env.HUBSHIFT_PAGE_CAPTURE = dump.captureDir;
  if (dump?.captureDir && dump.stopped) env.HUBSHIFT_PAGE_CAPTURE_STOPPED = '1';
  if (ctx.config.criuActionScript) env.HUBSHIFT_USER_ACTION_SCRIPT = ctx.config.criuActionScript;
  return env;
}

/**
 * The action script for a criu run: hubshift's hook where it has work there (a dump's post-dump: the server's
 * log, the capture's last page), else only when the operator has a script of their own. criu runs it at every
 * stage (seven times in a restore), 1-4 ms a run here.
 */
export function actionScriptFor(ctx: AgentContext, hubshiftNeedsIt: boolean): string | undefined {
  return hubshiftNeedsIt || ctx.config.criuActionScript ? ctx.criuHook : undefined;
}

/** Where criu's log for a run of this agent goes. */
export function logPath(ctx: AgentContext, name: string): string {
  return join(ctx.config.dataDir, 'logs', name);
}
