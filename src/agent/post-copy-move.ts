import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import type { MoveFile, MoveResult, PageServerAt } from '../core/checkpoint.js';
import { UpstreamError, errorMessage } from '../core/errors.js';
import { sessionUrl } from '../core/session.js';
import { startLazyDump, type LazyDump } from '../criu/driver.js';
import { pagesWritten } from '../criu/pagemap.js';
import { BulkSender } from '../images/bulk-channel.js';
import { SIDE_FILES_DIR } from '../images/checkpoint-writer.js';
import { PIECE_BYTES } from '../images/hashing.js';
import { isoTimeOf, sleep, waitFor } from '../util/exec.js';
import { isAlive } from '../util/proc.js';
import { AgentClient } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import { beginDump, copyFrozenLog, dumpArgs, netnsLeftOut, resetLeftOutRequests, rollBackDump, type DumpStart } from './dump-service.js';
import { askTargetMs, handOver, openMoveStream, resumeHere, type MoveRequest, type OpenMove } from './move-send.js';
import { changedSinceCopy, frozenBy, precopyChoice, sendAhead, snapshotPath, type ChangedPages, type Precopy } from './memory-precopy.js';
import { dropMovedNetns, freePort, ipv4Of, localAddressToward, setHostVeth } from './network.js';
import { guardPageServer } from './page-server-guard.js';
import { forgetOutgoing, listOutgoing, recordOutgoing } from './outgoing-moves.js';
import { dropSessionFiles } from './session-service.js';
import { killSession } from './sandbox.js';
import { embedSessionMemory } from './embedded-memory.js';
import { hotPagesPath, readHotPages, type HotPages } from './hot-pages.js';

/**
 * Moves a running session to another agent post-copy. criu freezes the
 * session and writes everything but its anonymous memory (a few MB), then
 * serves that memory from a page server here; the target restores from those
 * images with a lazy-pages daemon that fetches each page on first touch and
 * the rest in the background. The downtime is the small dump, its transfer,
 * the restore and the server's first answer (which waits on the pages it
 * touches, so it still grows with the session's size; see README).
 *
 * The source's processes stay frozen until the target has every page: criu
 * kills them only then. If the transfer breaks at any point, criu lets them
 * run again (from the freeze); the target kills its copy when its daemon
 * fails, so the session runs in one place. Before the commit a failure
 * resumes the session here (auto mode then retries stop-and-copy); after the
 * commit a broken transfer loses what the session did on the target since
 * the freeze, not the session (short of a target daemon that dies on its
 * own while the page server idles: see breakLazyTransfer).
 */
export async function movePostCopy(ctx: AgentContext, id: string, req: MoveRequest, target: AgentClient): Promise<MoveResult> {
  const started = performance.now();
  const targetHost = new URL(target.baseUrl).hostname;
  const address = await localAddressToward(targetHost);
  const peer = await ipv4Of(targetHost);
  const pageServer: PageServerAt = { address, port: await freePort(address) };
  return ctx.registry.exclusive(id, 'move', async () => {
    // Only the target's lazy-pages daemon may fetch the frozen session's memory; set up before the freeze.
    const guard = await guardPageServer(pageServer, peer, ctx.log);
    // The memory read from the frozen processes goes beside the stream, on a connection of its own (bulk-channel.ts).
    let bulk: BulkSender;
    try {
      bulk = await BulkSender.open(address, peer, PIECE_BYTES, ctx.config.moveIdleTimeoutMs);
    } catch (err) {
      await guard.remove();
      throw err;
    }
    let precopied: Precopied | undefined;
    try {
      // The pages the kernels asked for first after their last lazy restore or move go ahead instead of their smallest mappings.
      const hot = await readHotPages(hotPagesPath(ctx.config.dataDir, ctx.registry.get(id)));
      const m = openMoveStream(ctx, id, target, req.fence, bulk.at);
      // Before the freeze, the memory it will send eagerly goes ahead: after it, only what changed since (memory-precopy.ts).
      try {
        precopied = await precopy(ctx, id, bulk, m, req.precopy ?? ctx.config.postCopyPrecopy, hot);
      } catch (err) {
        await guard.remove();
        await m.cancel(`the pre-copy failed: ${errorMessage(err)}`);
        // Before the freeze: the session never stopped running here.
        throw new UpstreamError(`moving ${id} to ${target.baseUrl} (post-copy) failed while copying its memory ahead, before the freeze: ${errorMessage(err)}; the session runs here as before`, err instanceof UpstreamError ? err.status : 502, 'move_failed');
      }
      let d: DumpStart;
      try {
        d = await beginDump(ctx, id, 'postCopy');
      } catch (err) {
        await guard.remove();
        await m.cancel(`the dump could not start: ${errorMessage(err)}`);
        throw err;
      }
      ctx.registry.report(id, 'dumping (post-copy)');
      // The session runs until criu has it in ptrace stops, 10-20 ms after criu's start here: that is the freeze
      // (frozenBy); from criu's start where it is not seen (nothing copied ahead: no processes listed).
      const dumpStartedAt = performance.now();
      let frozen: Promise<number | null> = Promise.resolve(null);
      let criu: LazyDump | undefined;
      let dumpSeconds: number;
      let changed: Promise<ChangedPages | null> = Promise.resolve(null);
      try {
        criu = await startLazyDump(ctx.criu, { ...dumpArgs(ctx, d, { lazy: true }), pageServer });
        void criu.exited.finally(() => guard.remove());
        // Beside criu's dump, once it has stopped the session: the copy ahead compared with the frozen memory.
        const ahead = precopied;
        if (ahead.hostPids.size > 0) frozen = frozenBy([...ahead.hostPids.values()], criu.pid, { since: dumpStartedAt, stop: criu.ready, timeoutMs: 2_000 }).catch(() => null);
        changed = changedSinceCopy(ahead.precopy, ahead.hostPids, frozen).catch(() => null);
        dumpSeconds = await criu.ready;
        await copyFrozenLog(ctx, d);
        // Before the source link goes down (beside the target's restore): their resets leave from here.
        await resetLeftOutRequests(ctx, d);
      } catch (err) {
        if (!criu) await guard.remove();
        await m.cancel(`the dump failed: ${errorMessage(err)}`);
        criu?.kill();
        await criu?.exited;
        await rollBackDump(ctx, d, err);
        throw err;
      }
      // For the move's account: what criu wrote itself, where it wrote more than a lazy dump's few pages (a kernel's
      // whole memory, when one of its threads' stack pointers is page-aligned: criu's is_stack(), see README).
      const criuWrote = pagesWritten(d.images, 1 << 20);
      // The server's memory and the kernels' hot pages (or smallest mappings) go with the images, read from the frozen processes as
      // they are sent: the target restores them eagerly, so neither the server's first answer nor a kernel's first
      // execute waits on pages fetched one by one over the network (embedSessionMemory).
      // Not seen frozen while criu dumped (it is now): compared here; failing that, nothing is taken from the copy.
      let changedPages = await changed;
      if (!changedPages) {
        ctx.log.warn({ session: id }, 'the memory copied ahead is compared after the dump: the session was not seen stopped by criu while it dumped');
        changedPages = await changedSinceCopy(precopied.precopy, precopied.hostPids).catch(() => null);
      }
      const embedded = await embedSessionMemory(
        d.images,
        d.s.pid as number,
        ctx.config.postCopyEagerBytes,
        (vpid, err) => ctx.log.warn({ session: id, pid: vpid, err: errorMessage(err) }, 'the memory of this process of the session stays lazy in this post-copy move'),
        changedPages ? { runs: precopied.precopy.runs, changed: changedPages } : undefined,
        hot,
      ).catch((err: unknown) => {
        ctx.log.warn({ session: id, err: errorMessage(err) }, "the session's memory stays lazy in this post-copy move");
        return [];
      });
      ctx.registry.report(id, 'sending (post-copy)');
      const h = await handOver(ctx, m, target, req, { images: d.images, side: d.side, session: d.s, dumpSeconds, netnsOutside: netnsLeftOut(d), embedded }, {
        pageServer,
        bulk,
        precopied: precopied.files,
        // The source link down before the commit: frozen and locked, its kernel would still answer ARP for the
        // address the target is about to take. Beside the target's restore, not before the images go: an `ip` run
        // forked from this agent, which holds the memory copied ahead, kept its thread 15-30 ms.
        whileTargetRestores: { phase: 'taking the source link down', run: () => setHostVeth(d.s.network, 'down') },
      });
      if (!h.ok) return rollBack(ctx, d, criu, target, req.target.token, { phase: h.phase, cause: h.cause, linkDown: true });
      const { total, lap } = h;
      const frozenAt = (await frozen) ?? dumpStartedAt;
      const downtimeSeconds = (performance.now() - frozenAt) / 1000;
      // It runs on the target now; this agent keeps only criu serving the rest of its memory.
      await letGo(ctx, d, criu, target, req.target.token);
      const seconds = (performance.now() - started) / 1000;
      ctx.log.info({ session: id, target: target.baseUrl, bytes: total, seconds, downtimeSeconds, pageServer, ready: dumpSeconds, embedded: embedded.reduce((a, e) => a + e.added, 0), inParent: embedded.reduce((a, e) => a + e.inParent, 0), precopied: precopied.precopy.bytes, precopySeconds: precopied.seconds, criuWrote, ...lap }, 'session moved (post-copy); its memory follows');
      const bytesAhead = precopied.files.reduce((a, f) => a + f.bytes, 0);
      return { id, url: sessionUrl(d.s), mode: 'post-copy', downtimeSeconds, frozenAt: isoTimeOf(frozenAt), dumpStartedAt: isoTimeOf(dumpStartedAt), seconds, bytes: total, bytesAhead, target: target.baseUrl };
    } finally {
      bulk.close();
      // After the answer, not before it: dropping 120 MB of page cache took 10-25 ms here. An agent stopped
      // meanwhile removes what is left at its next start (removeLeftCopies).
      const snapshot = precopied?.precopy.snapshot;
      if (snapshot) void rm(snapshot, { force: true }).catch((err: unknown) => ctx.log.warn({ session: id, snapshot, err: errorMessage(err) }, 'the copy ahead could not be removed'));
    }
  });
}

interface Precopied {
  precopy: Precopy;
  /** The session's processes, by pid in the session, when the copy was chosen. */
  hostPids: Map<number, number>;
  files: MoveFile[];
  seconds: number;
}

/**
 * Copies the memory the move will send eagerly while the session still runs,
 * and sends it ahead on the bulk channel. A copy that cannot be taken costs
 * only the time: the move sends everything after the freeze, as without it.
 * A target that refuses the move (or fails) meanwhile fails it here, before
 * the freeze.
 */
async function precopy(ctx: AgentContext, id: string, bulk: BulkSender, m: OpenMove, wanted: boolean, hot: HotPages): Promise<Precopied> {
  const started = performance.now();
  const pid = ctx.registry.get(id).pid;
  const none: Precopied = { precopy: { runs: new Map(), bytes: 0, snapshot: null }, hostPids: new Map(), files: [], seconds: 0 };
  if (pid === null || !wanted) return none;
  ctx.registry.report(id, 'copying memory ahead (post-copy)');
  let choice: Awaited<ReturnType<typeof precopyChoice>>;
  try {
    choice = await precopyChoice(pid, ctx.config.postCopyEagerBytes, hot);
  } catch (err) {
    ctx.log.warn({ session: id, err: errorMessage(err) }, 'the memory to copy ahead could not be chosen; the move sends all its eager memory after the freeze');
    return none;
  }
  const refused = m.sending.then(
    () => Promise.reject(new Error('the target answered before the move was sent')),
    (err: unknown) => Promise.reject(err instanceof Error ? err : new Error(errorMessage(err))),
  );
  refused.catch(() => undefined);
  const snapshot = snapshotPath(ctx.config.workDir, id);
  try {
    const { precopy: p, files } = await Promise.race([sendAhead(bulk, choice.hostPids, choice.runs, snapshot), refused]);
    return { precopy: p, hostPids: choice.hostPids, files, seconds: (performance.now() - started) / 1000 };
  } catch (err) {
    await rm(snapshot, { force: true });
    throw err;
  }
}

/** The target runs the session: this agent forgets it, and keeps a record of the frozen copy until criu is done with it. */
async function letGo(ctx: AgentContext, d: DumpStart, criu: LazyDump, target: AgentClient, targetToken: string): Promise<void> {
  await ctx.registry.remove(d.s.id);
  await recordOutgoing(ctx.config.dataDir, { sessionId: d.s.id, criuPid: criu.pid, sessionPid: d.s.pid as number, target: target.baseUrl, targetToken, session: d.s, work: d.work });
  void settleAfterCommit(ctx, d, criu, target).finally(() => forgetOutgoing(ctx.config.dataDir, d.s.id));
}

/**
 * After the commit: waits for criu to hand over the last page. 0: the move
 * is complete (criu has ended the frozen copy here). Otherwise the transfer
 * broke and criu let the frozen copy run again: it is this agent's session
 * once more, as it was at the freeze. A transfer that stalls (a link dead
 * without a reset) is given up when the target has not answered, or no
 * longer holds the session, for the move's idle timeout: the target's own
 * stall watch kills its copy after the same time.
 */
async function settleAfterCommit(ctx: AgentContext, d: DumpStart, criu: LazyDump, target: AgentClient): Promise<void> {
  const code = await exitOrStall(ctx, d.s.id, criu, target);
  // This agent is stopping: its outgoing record stays for the next one.
  if (code === null) return;
  const complete = async (): Promise<void> => {
    await dropMovedNetns(d.s.id, d.netns);
    await dropSessionFiles(ctx, d.s);
    await rm(d.work, { recursive: true, force: true });
  };
  if (code === 0) {
    ctx.log.info({ session: d.s.id, target: target.baseUrl }, 'post-copy move complete: every page reached the target');
    return complete();
  }
  // criu fails after the last page too (its post-dump stage), and then resumes the frozen copy as on a broken
  // transfer. The target decides: if it runs the session with every page, the copy here is the stale one.
  if (await targetHasEveryPage(ctx, d.s.id, target)) {
    ctx.log.error({ session: d.s.id, target: target.baseUrl, code }, 'criu failed after every page reached the target and let the frozen copy here run again; killed it');
    if (d.s.pid !== null) await killSession(d.s.pid);
    return complete();
  }
  ctx.log.error({ session: d.s.id, target: target.baseUrl, code }, 'the post-copy transfer broke after the commit; the session resumes here from the freeze');
  const error = `its post-copy move to ${target.baseUrl} broke after the commit (criu exited ${code}); it resumed here as it was at the freeze`;
  await resumeHere(ctx, d, true, error).catch((err: unknown) => ctx.log.error({ session: d.s.id, err: errorMessage(err) }, 'could not resume the session after a broken post-copy transfer'));
}

/**
 * Whether the target runs the session with all its memory there. Its lazy
 * daemon ends just before criu here does, so an answer of 'still arriving'
 * is asked again for a few seconds; no answer counts as no.
 */
function targetHasEveryPage(ctx: AgentContext, id: string, target: AgentClient): Promise<boolean> {
  const answer = async (): Promise<boolean | undefined> => {
    const there = await target.findSession(id, 2_000).catch(() => undefined);
    if (there?.state !== 'running') return false;
    return there.memoryArriving ? undefined : true;
  };
  return waitFor(`${target.baseUrl} to hold every page of ${id}`, answer, { timeoutMs: Math.min(10_000, ctx.config.moveIdleTimeoutMs), intervalMs: 100 }).catch(() => false);
}

/**
 * After an agent restart: outgoing post-copy moves whose criu still serves
 * pages are watched to their end (criu is no longer this process's child,
 * so its exit is read from the frozen copy: gone means every page went;
 * still there means the transfer broke and criu let it run, and the
 * session is this agent's again).
 */
export function watchOutgoingAfterRestart(ctx: AgentContext): void {
  void (async () => {
    for (const m of await listOutgoing(ctx.config.dataDir)) {
      if (ctx.registry.find(m.sessionId)) {
        await forgetOutgoing(ctx.config.dataDir, m.sessionId);
        continue;
      }
      void (async () => {
        const stopping = ctx.stopping.signal;
        while (!stopping.aborted && (await isAlive(m.criuPid))) await sleep(500, stopping).catch(() => undefined);
        if (stopping.aborted) return;
        const d: DumpStart = { s: m.session, checkpoint: '', work: m.work, images: join(m.work, 'images'), side: join(m.work, SIDE_FILES_DIR), netns: null };
        // criu let the frozen copy run again; if it failed after the last page (see settleAfterCommit), the target's copy is the session.
        const resumedHere = await isAlive(m.sessionPid);
        const stale = resumedHere && m.targetToken !== undefined && (await targetHasEveryPage(ctx, m.sessionId, new AgentClient(m.target, m.targetToken)));
        if (stale) {
          ctx.log.error({ session: m.sessionId, target: m.target }, 'criu failed after every page reached the target while this agent was down, and let the frozen copy here run again; killed it');
          await killSession(m.sessionPid);
        }
        if (resumedHere && !stale) {
          ctx.log.error({ session: m.sessionId, target: m.target }, 'a post-copy move out of this agent broke while the agent was down; the session resumes here from the freeze');
          await resumeHere(ctx, d, true, `its post-copy move to ${m.target} broke while this agent was restarting; it resumed here as it was at the freeze`).catch((err: unknown) =>
            ctx.log.error({ session: m.sessionId, err: errorMessage(err) }, 'could not resume the session after a broken post-copy transfer'),
          );
        } else {
          await dropSessionFiles(ctx, m.session);
          await rm(m.work, { recursive: true, force: true });
        }
        await forgetOutgoing(ctx.config.dataDir, m.sessionId);
      })().catch((err: unknown) => ctx.log.error({ session: m.sessionId, err: errorMessage(err) }, 'watching an outgoing post-copy move failed'));
    }
  })().catch((err: unknown) => ctx.log.error({ err: errorMessage(err) }, 'reading outgoing post-copy moves failed'));
}

/**
 * criu's exit code; criu is killed first once the target has been silent, or
 * without the session, for the move's idle timeout. null: this agent is
 * stopping (criu is left to the next agent).
 */
async function exitOrStall(ctx: AgentContext, id: string, criu: LazyDump, target: AgentClient): Promise<number | null> {
  let healthy = performance.now();
  const poll = Math.min(2_000, ctx.config.moveIdleTimeoutMs / 4);
  const stopping = ctx.stopping.signal;
  for (;;) {
    const code = await Promise.race([criu.exited, sleep(poll, stopping).then(() => null, () => null)]);
    if (stopping.aborted) return null;
    if (code !== null) return code;
    const there = await target.findSession(id, poll).catch(() => undefined);
    if (there && (there.state === 'running' || there.state === 'restoring')) healthy = performance.now();
    if (performance.now() - healthy > ctx.config.moveIdleTimeoutMs) {
      ctx.log.error({ session: id, target: target.baseUrl, answered: there !== undefined, state: there?.state ?? null }, 'the post-copy transfer made no progress the target vouches for; stopping it');
      criu.kill();
      return criu.exited;
    }
  }
}

/**
 * The move failed before the target confirmed its commit. The target's copy
 * is aborted first (its daemon killed, which is what makes criu here give up
 * the transfer); if the target says it runs the session after all (the
 * commit went through, or every page had arrived), the move succeeded.
 */
async function rollBack(ctx: AgentContext, d: DumpStart, criu: LazyDump, target: AgentClient, targetToken: string, f: { phase: string; cause: unknown; linkDown: boolean }): Promise<never> {
  const id = d.s.id;
  ctx.log.error({ session: id, target: target.baseUrl, phase: f.phase, err: errorMessage(f.cause) }, 'post-copy move failed; resuming the session here');
  const movedAfterAll = async (): Promise<never> => {
    await letGo(ctx, d, criu, target, targetToken);
    throw new UpstreamError(`the post-copy move of ${id} to ${target.baseUrl} completed there, but this agent did not hear it in time (${errorMessage(f.cause)}); the session runs on the target, ask it`, 409, 'moved');
  };
  let abortConfirmed = false;
  let claimed = false;
  try {
    await target.abortMove(id, askTargetMs(ctx));
    abortConfirmed = true;
  } catch (err) {
    claimed = err instanceof UpstreamError && err.status === 409;
  }
  // The commit reached it, only the answer was lost.
  if (claimed && f.phase === 'committing') return movedAfterAll();
  // Otherwise the target has this copy only if it fetched every page, and then criu here exits 0. A confirmed
  // abort killed its daemon (criu sees the connection close at once); an unconfirmed one is done by its guard
  // after the commit timeout.
  const code = await exitWithin(criu, abortConfirmed ? 1_000 : ctx.config.incomingTimeoutMs + 2_000);
  if (code === 0) return movedAfterAll();
  try {
    await resumeHere(ctx, d, f.linkDown, null);
  } catch (err) {
    await ctx.registry.update(id, { state: 'failed', pid: null, error: `post-copy move to ${target.baseUrl} failed (${errorMessage(f.cause)}) and resuming here failed too (${errorMessage(err)})` });
    throw err;
  }
  throw new UpstreamError(`moving ${id} to ${target.baseUrl} (post-copy) failed while ${f.phase}: ${errorMessage(f.cause)}; the session runs here again`, f.cause instanceof UpstreamError ? f.cause.status : 502, 'move_failed');
}

/** criu's exit code, killing it first if it has not exited within `ms`. */
async function exitWithin(criu: LazyDump, ms: number): Promise<number> {
  const code = await Promise.race([criu.exited, sleep(ms).then(() => null)]);
  if (code !== null) return code;
  criu.kill();
  return criu.exited;
}
