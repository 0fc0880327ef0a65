import { rm } from 'node:fs/promises';
import type { MoveMode, MoveResult, PageServerAt } from '../core/checkpoint.js';
import { InputError, UpstreamError, errorMessage } from '../core/errors.js';
import { sessionUrl } from '../core/session.js';
import { isoTimeOf } from '../util/exec.js';
import { AgentClient } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import { dumpLocally, type LocalDump } from './dump-service.js';
import { restoreFromImages } from './restore-service.js';
import { dropUnusedSessionNetns } from './network.js';
import { forgetSession } from './session-service.js';
import { movePostCopy } from './post-copy-move.js';
import { clearTargetCopy, handOver, openMoveStream, type MoveRequest } from './move-send.js';
import { movePushed } from './pushed-move.js';
import { lazyRestoreBlocker } from '../criu/transparent-huge-pages.js';
import { pageAlignedStacks } from '../criu/lazy-stack.js';
import { processTree } from '../util/proc.js';
import { killSession } from './sandbox.js';

export type { MoveRequest } from './move-send.js';

/** Whether this agent's criu can move sessions post-copy (its setup probe passed, and the host's memory settings allow it now). */
export function postCopyHere(ctx: AgentContext): boolean {
  return ctx.criu.postCopy?.ok === true && ctx.criu.lazyPages && lazyRestoreBlocker(ctx.config.transparentHugePagesFile) === null;
}

/** Why post-copy is refused here: the host's memory settings, or the setup probe's finding (see README, "Moving sessions"). */
export function postCopyBlocker(ctx: AgentContext): string {
  const criu = ctx.criu;
  const thp = lazyRestoreBlocker(ctx.config.transparentHugePagesFile);
  if (thp) return `post-copy between agents is not available on this machine now: ${thp}`;
  if (!criu.postCopy) return 'post-copy between agents is not available: it has not been probed with this criu (run npm run setup)';
  if (!criu.postCopy.ok) return `post-copy between agents is not available on this machine (criu ${criu.version}, kernel ${criu.kernel}): ${criu.postCopy.reason}`;
  return `post-copy between agents is not available on this machine: the kernel has no userfaultfd for criu ${criu.version}`;
}

/**
 * Which way to move: post-copy when both agents can (the fastest: the
 * downtime does not grow with memory), else stop-and-copy. An explicit
 * post-copy that either side cannot do is refused with the reason.
 */
async function chooseMode(ctx: AgentContext, id: string, wanted: MoveMode, target: AgentClient): Promise<'stop-and-copy' | 'post-copy'> {
  const mode = await modeBothCan(ctx, wanted, target);
  // hubshift's build of criu keeps such a process lazy (lazy-stack-page.patch, probed at setup).
  if (mode !== 'post-copy' || ctx.criu.lazyStackExact === true) return mode;
  // Stock criu would write a whole kernel into the images and send it while frozen, more slowly than stop-and-copy's push.
  const s = ctx.registry.get(id);
  const aligned = s.pid === null ? [] : await pageAlignedStacks((await processTree(s.pid)).filter((p) => p !== s.pid));
  if (aligned.length === 0) return mode;
  const why = "a kernel's thread is blocked with its stack pointer page-aligned, so criu would dump that process whole, none of it lazy (criu's is_stack(); see README)";
  if (wanted === 'post-copy') {
    ctx.log.warn({ session: id, threads: aligned }, `${why}; moving post-copy as asked`);
    return mode;
  }
  ctx.log.warn({ session: id, threads: aligned }, `${why}; moving stop-and-copy`);
  return 'stop-and-copy';
}

async function modeBothCan(ctx: AgentContext, wanted: MoveMode, target: AgentClient): Promise<'stop-and-copy' | 'post-copy'> {
  if (wanted === 'stop-and-copy') return wanted;
  if (!postCopyHere(ctx)) {
    if (wanted === 'post-copy') throw new InputError(postCopyBlocker(ctx));
    return 'stop-and-copy';
  }
  const there = await target.health().catch((err: unknown) => {
    if (wanted === 'post-copy') throw err;
    return null;
  });
  if (there?.postCopy === true) return 'post-copy';
  if (wanted === 'post-copy') throw new InputError(`post-copy is not available on the target ${target.baseUrl} (its criu failed the lazy-migration probe, its transparent huge pages are "always", or it is older than this agent; its log says which); move with --mode stop-and-copy`);
  return 'stop-and-copy';
}

/**
 * Moves a running session to another agent in the fastest way both support
 * (see chooseMode). In auto mode a post-copy move that failed, leaving the
 * session running here again, is retried stop-and-copy.
 */
export async function moveSession(ctx: AgentContext, id: string, req: MoveRequest): Promise<MoveResult> {
  const target = new AgentClient(req.target.url, req.target.token);
  if ((await chooseMode(ctx, id, req.mode, target)) === 'post-copy') {
    try {
      return await movePostCopy(ctx, id, req, target);
    } catch (err) {
      if (req.mode !== 'auto' || !(err instanceof UpstreamError && err.upstreamCode === 'move_failed')) throw err;
      ctx.log.warn({ session: id, target: target.baseUrl, err: errorMessage(err) }, 'post-copy move failed and the session runs here again; moving it stop-and-copy');
    }
  }
  return moveStopAndCopy(ctx, id, req, target);
}

/**
 * Stop-and-copy, the memory pushed by criu to a page server on the target
 * (see movePushed); streamed through the agents when the target cannot
 * open one (an agent older than that, or criu failing to listen there).
 */
async function moveStopAndCopy(ctx: AgentContext, id: string, req: MoveRequest, target: AgentClient): Promise<MoveResult> {
  let at: PageServerAt;
  try {
    at = await target.openPageServer(id, req.fence);
  } catch (err) {
    // Refusals (a conflict, a stale fence, bad input) would refuse the streamed move too.
    if (err instanceof UpstreamError && err.status >= 400 && err.status < 500 && err.status !== 404) throw err;
    ctx.log.warn({ session: id, target: target.baseUrl, err: errorMessage(err) }, 'the target opened no page server; streaming the memory through the agents');
    return moveStreamed(ctx, id, req, target);
  }
  return movePushed(ctx, id, req, target, at);
}

/**
 * Moves a running session to another agent, stop-and-copy through the
 * agents: the target is
 * sent the page images while criu dumps them here (a local copy stays for a
 * rollback), then the rest and the manifest; it verifies all of it, restores
 * the session stopped, and the commit lets it run there while this agent
 * forgets it. Any failure before the commit resumes it here, once the target
 * has confirmed its copy is gone (or could not have outlived its commit
 * timeout).
 */
async function moveStreamed(ctx: AgentContext, id: string, req: MoveRequest, target: AgentClient): Promise<MoveResult> {
  const mode = 'stop-and-copy' as const;
  const progress = (step: string, done?: number, total?: number): void => ctx.registry.report(id, step, done, total);
  const started = performance.now();
  return ctx.registry.exclusive(id, 'move', async () => {
    const m = openMoveStream(ctx, id, target, req.fence);
    let sendError: unknown;
    // Resolves when the chunk is on its way (its buffer free again); never rejects.
    const pageSink = async (name: string, chunk: Buffer): Promise<void> => {
      if (sendError !== undefined) return;
      await m.out.data(`images/${name}`, chunk).catch((err: unknown) => {
        sendError ??= err;
      });
    };
    let d: LocalDump;
    try {
      // Left stopped, not killed by criu: the requests the dump left out are reset first (dumpLocally).
      d = await dumpLocally(ctx, id, { leaveRunning: false, leaveStopped: true, kind: 'stopAndCopy', hashPages: true, volatile: true, pageSink });
    } catch (err) {
      await m.cancel(`the dump failed: ${errorMessage(err)}`);
      throw err;
    }
    // What criu would have done, waiting as it did: from here the local images are the rollback, and neither letGo
    // nor a restore here may meet the old tree's namespace.
    await killSession(d.session.pid as number);
    const { frozenAt } = d;
    progress('sending');
    // tail: from criu's exit to the last page sent (the dump returns then).
    const tail = (performance.now() - frozenAt) / 1000 - d.dumpSeconds;
    const h = await handOver(ctx, m, target, req, d, { failedWhileDumping: sendError });
    if (!h.ok) return rollBack(ctx, d, target, h.phase, h.cause);
    const { total, lap } = h;
    await letGo(ctx, d);
    const seconds = (performance.now() - started) / 1000;
    const downtimeSeconds = (performance.now() - frozenAt) / 1000;
    ctx.log.info({ session: id, target: req.target.url, bytes: total, seconds, downtimeSeconds, dumpSeconds: d.dumpSeconds, tail, ...lap }, 'session moved');
    return { id, url: sessionUrl(d.session), mode, downtimeSeconds, frozenAt: isoTimeOf(frozenAt), dumpStartedAt: isoTimeOf(frozenAt), seconds, bytes: total, bytesAhead: 0, target: req.target.url };
  });
}

/**
 * The target runs the session: this agent lets go of its copy (criu already
 * ended the processes), its local images, and its namespace's name if no
 * process is in the namespace it names (dropUnusedSessionNetns: a name that
 * the target's copy has taken, on test hosts, is left alone).
 */
async function letGo(ctx: AgentContext, d: LocalDump): Promise<void> {
  // First, so that forgetSession sees whether the session still has a namespace on this machine.
  if (await dropUnusedSessionNetns(d.session.id, d.session.network).catch(() => false)) ctx.log.info({ session: d.session.id }, "dropped the moved session's namespace name here");
  await forgetSession(ctx, d.session.id);
  await rm(d.work, { recursive: true, force: true });
}

/**
 * The move failed before the target confirmed its commit. If the target
 * says it runs the session after all, the move succeeded; otherwise its copy
 * is aborted (or has timed out) and the session is restored here from the
 * local images.
 */
async function rollBack(ctx: AgentContext, d: LocalDump, target: AgentClient, phase: string, cause: unknown): Promise<never> {
  const id = d.session.id;
  ctx.log.error({ session: id, target: target.baseUrl, phase, err: errorMessage(cause) }, 'move failed; resuming the session here');
  // The commit went through if the target says so; this agent then lets go, as after a move.
  await clearTargetCopy(ctx, target, id, cause, () => letGo(ctx, d));
  try {
    await restoreFromImages(ctx, { ...d.session, state: 'restoring', pid: null }, d.images, `${d.checkpoint}-back`, { lazy: false, netnsOutside: d.netnsOutside });
  } catch (err) {
    await ctx.registry.update(id, { state: 'failed', pid: null, error: `move to ${target.baseUrl} failed (${errorMessage(cause)}) and resuming here failed too (${errorMessage(err)}); images kept in ${d.images}` });
    throw err;
  }
  await rm(d.work, { recursive: true, force: true });
  throw new UpstreamError(`moving ${id} to ${target.baseUrl} failed while ${phase}: ${errorMessage(cause)}; the session runs here again`, cause instanceof UpstreamError ? cause.status : 502, 'move_failed');
}
