import { rm } from 'node:fs/promises';
import type { MoveResult, PageServerAt } from '../core/checkpoint.js';
import { UpstreamError, errorMessage } from '../core/errors.js';
import { sessionUrl } from '../core/session.js';
import { dump } from '../criu/driver.js';
import { isoTimeOf } from '../util/exec.js';
import { resetConnectionsTo, tcpBytes } from '../util/tcp.js';
import { watchTransfer } from './transfer-watch.js';
import type { AgentClient } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import { beginDump, copyFrozenLog, dumpArgs, netnsLeftOut, resetLeftOutRequests, rollBackDump, type DumpStart } from './dump-service.js';
import { forgetStoppedCopy, recordStoppedCopy } from './stopped-copies.js';
import { sampleProcesses } from './metrics.js';
import { askTargetMs, clearTargetCopy, handOver, openMoveStream, resumeHere, type MoveRequest } from './move-send.js';
import { setHostVeth } from './network.js';
import { endStoppedCopy } from './session-service.js';

/**
 * Moves a running session stop-and-copy with its memory pushed by criu
 * itself: `criu dump --page-server` sends the pages from the frozen
 * processes to a page server the target opened (`at`), which writes them to
 * its disk, with no agent in their path; the few MB of other images are
 * written here and follow in the move stream. criu leaves the tree stopped
 * (--leave-stopped) instead of killing it, so any failure before the commit
 * resumes it here as it was at the freeze; after the commit it is killed.
 */
export async function movePushed(ctx: AgentContext, id: string, req: MoveRequest, target: AgentClient, at: PageServerAt): Promise<MoveResult> {
  const started = performance.now();
  return ctx.registry.exclusive(id, 'move', async () => {
    const m = openMoveStream(ctx, id, target, req.fence);
    let d: DumpStart;
    try {
      d = await beginDump(ctx, id, 'stopAndCopy');
    } catch (err) {
      await m.cancel(`the dump could not start: ${errorMessage(err)}`);
      await target.abortMove(id, askTargetMs(ctx)).catch(() => undefined);
      throw err;
    }
    // criu is about to leave the session stopped here: recorded, so a teardown finds it without the agent.
    const stopped = { sessionId: id, sessionPid: d.s.pid as number, target: target.baseUrl, committing: false };
    await recordStoppedCopy(ctx.config.dataDir, stopped);
    const frozenAt = performance.now();
    const watch = watchPush(ctx, id, at, (await sampleProcesses(d.s.pid as number)).rssBytes);
    let dumpSeconds: number;
    try {
      // Left stopped: the log is copied here after criu (below), so criu runs no hook of hubshift's (dumpArgs).
      ({ seconds: dumpSeconds } = await dump(ctx.criu, dumpArgs(ctx, d, { stopped: true }, ['--page-server', '--address', at.address, '--port', String(at.port)])));
    } catch (err) {
      watch.stop();
      await m.cancel(`the dump failed: ${errorMessage(err)}`);
      await target.abortMove(id, askTargetMs(ctx)).catch(() => undefined);
      // criu resumed the tree itself; this removes what it may have left.
      await rollBackDump(ctx, d, err);
      await forgetStoppedCopy(ctx.config.dataDir, id);
      const why = watch.stalled ? `no page reached the target's page server for ${ctx.config.moveIdleTimeoutMs / 1000} s (${errorMessage(err)})` : errorMessage(err);
      if (ctx.registry.find(id)?.state !== 'running') throw err;
      throw new UpstreamError(`moving ${id} to ${target.baseUrl} failed while pushing its memory: ${why}; the session runs here again`, 502, 'move_failed');
    }
    watch.stop();
    // While the source link is still up: their resets leave from here.
    await resetLeftOutRequests(ctx, d);
    // Stopped and locked, but its kernel would still answer ARP for the address the target is about to take.
    let phase = 'copying the server log';
    try {
      await copyFrozenLog(ctx, d);
      phase = 'taking the source link down';
      await setHostVeth(d.s.network, 'down');
    } catch (err) {
      m.out.abort(new Error(`the move failed while ${phase}`));
      return rollBack(ctx, d, target, { phase, cause: err, linkDown: false });
    }
    ctx.registry.report(id, 'sending');
    const h = await handOver(ctx, m, target, req, { images: d.images, side: d.side, session: d.s, dumpSeconds, netnsOutside: netnsLeftOut(d) }, {
      pagesPushed: true,
      // From here an agent restarted before the copy here is settled kills it instead of resuming it.
      beforeCommit: () => recordStoppedCopy(ctx.config.dataDir, { ...stopped, committing: true }),
    });
    if (!h.ok) return rollBack(ctx, d, target, { phase: h.phase, cause: h.cause, linkDown: true });
    const downtimeSeconds = (performance.now() - frozenAt) / 1000;
    await letGo(ctx, d);
    const seconds = (performance.now() - started) / 1000;
    ctx.log.info({ session: id, target: target.baseUrl, bytes: h.total, pushedBytes: h.pushed, seconds, downtimeSeconds, dumpSeconds, ...h.lap }, 'session moved (stop-and-copy, memory pushed)');
    return { id, url: sessionUrl(d.s), mode: 'stop-and-copy', downtimeSeconds, frozenAt: isoTimeOf(frozenAt), dumpStartedAt: isoTimeOf(frozenAt), seconds, bytes: h.total + h.pushed, bytesAhead: 0, target: target.baseUrl };
  });
}

/** The session runs on the target: the stopped copy here is killed and forgotten. */
async function letGo(ctx: AgentContext, d: DumpStart): Promise<void> {
  await endStoppedCopy(ctx, d.s, d.netns);
  await rm(d.work, { recursive: true, force: true });
}

interface PushWatch {
  stop(): void;
  /** Whether the watch broke the transfer for want of progress. */
  readonly stalled: boolean;
}

/**
 * Shows the dump's progress (bytes the target acknowledged, against the
 * session's memory) and breaks a transfer that has stalled for the move's
 * idle timeout (a link dead without a reset would hold criu, and the frozen
 * session, for ever): its connection is reset (`ss -K`), criu's send fails,
 * and criu resumes the tree.
 */
function watchPush(ctx: AgentContext, id: string, at: PageServerAt, estimate: number): PushWatch {
  let stalled = false;
  let bytes = 0;
  ctx.registry.report(id, 'dumping', 0, estimate);
  const stop = watchTransfer(ctx, id, new Promise(() => undefined), {
    what: 'a pushed dump',
    intervalMs: 250,
    read: () => tcpBytes('dst', at, 'bytes_acked'),
    onProgress: (n) => {
      bytes = n;
      ctx.registry.report(id, 'dumping', n, estimate);
    },
    onStall: async () => {
      stalled = true;
      ctx.log.error({ session: id, pageServer: at, bytes }, 'the pushed memory made no progress for the move idle timeout; resetting the connection (criu then resumes the session)');
      await resetConnectionsTo(at);
    },
  });
  return {
    stop,
    get stalled() {
      return stalled;
    },
  };
}

/**
 * The move failed after the dump, before the target confirmed its commit.
 * If the target says it runs the session after all (the commit went
 * through, only its answer was lost), the move succeeded. Otherwise its copy
 * is aborted (or has timed out) and the stopped copy here resumes.
 */
async function rollBack(ctx: AgentContext, d: DumpStart, target: AgentClient, f: { phase: string; cause: unknown; linkDown: boolean }): Promise<never> {
  const id = d.s.id;
  ctx.log.error({ session: id, target: target.baseUrl, phase: f.phase, err: errorMessage(f.cause) }, 'move failed; resuming the session here');
  await clearTargetCopy(ctx, target, id, f.cause, () => letGo(ctx, d));
  try {
    await resumeHere(ctx, d, f.linkDown, null);
    await forgetStoppedCopy(ctx.config.dataDir, id);
  } catch (err) {
    await ctx.registry.update(id, { state: 'failed', pid: null, error: `move to ${target.baseUrl} failed (${errorMessage(f.cause)}) and resuming here failed too (${errorMessage(err)})` });
    throw err;
  }
  throw new UpstreamError(`moving ${id} to ${target.baseUrl} failed while ${f.phase}: ${errorMessage(f.cause)}; the session runs here again`, f.cause instanceof UpstreamError ? f.cause.status : 502, 'move_failed');
}
