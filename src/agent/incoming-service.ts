import { existsSync, renameSync } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ConflictError, NotFoundError, errorMessage } from '../core/errors.js';
import type { MoveManifest, PageServerAt } from '../core/checkpoint.js';
import { newCheckpointId } from '../core/ids.js';
import type { Session } from '../core/session.js';
import { SIDE_FILES_DIR, writeCheckpoint } from '../images/checkpoint-writer.js';
import { receiveMove } from '../images/move-stream.js';
import { pathExists } from '../util/fs.js';
import { waitFor } from '../util/exec.js';
import { isAlive, killQuietly, processesWithArgs } from '../util/proc.js';
import type { IdleGuard } from '../util/idle-guard.js';
import type { AgentContext, IncomingMove } from './agent-context.js';
import type { LandingHold } from './landing-memory.js';
import { assertRestorableHere, connectRestored, dropEarly, restoreFromImages, startIncomingDaemon, startRestored, type EarlyLazyPages } from './restore-service.js';
import { bytesReceivedFrom, prepareAnnounce, prepareSessionNetwork, removeNamedNetwork, removeSessionNetwork, removeStagedNetworks, stagingNetworkNames, stagingOwner, type NetworkNames } from './network.js';
import { breakLazyTransfer, lazyDaemonServing, lazyPagesFiles, lazyTransferHandedOver } from '../criu/lazy-pages.js';
import { forgetIncoming, incomingImages, listIncoming, recordIncoming, stopIncomingGuard } from './incoming-copies.js';
import { armIncomingGuard, prestartIncomingGuard } from './incoming-guard.js';
import { killSession, restoredServerPid } from './sandbox.js';
import { watchTransfer } from './transfer-watch.js';
import { claimPushedPages, dropPushedPages } from './pushed-pages.js';

/**
 * The target's half of a move. A session streamed in is verified whole,
 * restored stopped, and held until its source commits: only then does it run.
 * Without a commit in time it is killed, so a source that lost touch may
 * resume its own copy without ever having two.
 */
export async function receiveIncoming(ctx: AgentContext, body: Readable, admit: (sessionId: string) => Promise<void>): Promise<{ session: Session; verifySeconds: number; restoreSeconds: number; pushedBytes: number }> {
  const t0 = performance.now();
  const work = join(ctx.config.workDir, `in-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(work, { recursive: true, mode: 0o700 });
  // Its interpreter starts while the source dumps; armed before criu restore, cancelled on every other way out.
  const guard = prestartIncomingGuard(work);
  try {
    return await receiveAndRestore(ctx, body, admit, work, guard, t0);
  } finally {
    guard.cancel();
  }
}

async function receiveAndRestore(
  ctx: AgentContext,
  body: Readable,
  admit: (sessionId: string) => Promise<void>,
  work: string,
  guard: IdleGuard,
  t0: number,
): Promise<{ session: Session; verifySeconds: number; restoreSeconds: number; pushedBytes: number }> {
  const refuseIfBusy = async (session: Session): Promise<void> => {
    await assertRestorableHere(ctx, session);
    if (ctx.incoming.has(session.id)) throw new ConflictError(`session ${session.id} is already being moved in`);
  };
  let manifest: MoveManifest;
  // The session's network, made while the move streams (under its staging names) instead of in the frozen window.
  let staged: Promise<NetworkNames | undefined> | undefined;
  // Held from the header (before the source freezes) until criu restore: landing-memory.ts.
  let landing: LandingHold | undefined;
  const dropStaged = async (): Promise<void> => {
    void landing?.release();
    if (staged) await dropEarly({ netns: await staged });
    staged = undefined;
  };
  try {
    // Refused at the header, before the source has sent its memory.
    manifest = await receiveMove(
      body,
      work,
      async (header) => {
        await admit(header.session.id);
        await refuseIfBusy(header.session);
        staged = stageNetwork(ctx, header.session);
        landing = ctx.landing.warm();
      },
      { bulkTimeoutMs: ctx.config.moveIdleTimeoutMs },
    );
    // Again: another move of it may have come in while this one streamed.
    await refuseIfBusy(manifest.session);
  } catch (err) {
    await dropStaged();
    await rm(work, { recursive: true, force: true });
    throw err;
  }
  const verifySeconds = (performance.now() - t0) / 1000;
  const manifestSession = manifest.session;
  const id = manifestSession.id;
  return ctx.registry.exclusive(id, 'move in', async () => {
    const images = incomingImages(work);
    let pushedBytes = 0;
    if (manifest.pagesPushed) {
      try {
        pushedBytes = await claimPushedPages(ctx, id, images);
      } catch (err) {
        await dropStaged();
        await rm(work, { recursive: true, force: true });
        throw err;
      }
    }
    // The side files go where a restore looks for them (synchronously, frozen: see placeSideFiles).
    if (existsSync(join(work, SIDE_FILES_DIR))) renameSync(join(work, SIDE_FILES_DIR), join(images, SIDE_FILES_DIR));
    const previous = ctx.registry.find(id);
    // Before criu restore: an agent killed inside it leaves a copy that criu finishes without it. The guard ends it in
    // time (a second after this agent's own timer would have: that one acts first); the record, written before the
    // session's, lets a restarted agent settle it (settleIncoming).
    const guardPid = armIncomingGuard(guard, id, work, ctx.config.incomingTimeoutMs + 1_000, manifest.pageServer, ctx.config.restoreTimeoutMs);
    const r0 = performance.now();
    // The lazy-pages daemon starts with the records, not after the session's network is staged: the guard armed above
    // ends it if this agent dies before criu restore claims it.
    let daemon: EarlyLazyPages | undefined;
    try {
      // All settled before any failure is handled: a record written after its removal would outlive the move.
      const [recorded, put, started] = await Promise.allSettled([
        recordIncoming(ctx.config.dataDir, { sessionId: id, work, manifest, guardPid, committed: false }),
        ctx.registry.put({ ...manifestSession, state: 'restoring', pid: null, error: null, createdAt: previous?.createdAt ?? manifestSession.createdAt }),
        startIncomingDaemon(ctx, images, `in-${id}`, manifest.pageServer),
      ]);
      if (started.status === 'fulfilled') daemon = started.value;
      if (recorded.status === 'rejected') throw recorded.reason;
      if (put.status === 'rejected') throw put.reason;
      if (started.status === 'rejected') throw started.reason;
      const s = put.value;
      // From here the restore removes what it does not use.
      const netns = await staged;
      staged = undefined;
      const lazy = daemon;
      daemon = undefined;
      const restored = await restoreFromImages(ctx, s, images, `in-${id}`, { lazy: true, leaveStopped: true, pageServer: manifest.pageServer, netnsOutside: manifest.netnsOutside === true, early: { netns, lazy }, landing });
      // A post-copy restore is always lazy: its daemon fetches the memory from the page server.
      const postCopy = manifest.pageServer && restored.lazy ? { lazy: restored.lazy, pageServer: manifest.pageServer, complete: false } : undefined;
      if (postCopy) {
        void postCopy.lazy.outcome.then((o) => (postCopy.complete = o === 'complete'));
        if (restored.session.pid !== null) watchForStall(ctx, id, restored.session.pid, postCopy.lazy.kill, postCopy.pageServer, postCopy.lazy.outcome);
      }
      const timer = setTimeout(() => {
        if (postCopy) {
          // All its memory here means the source's criu has ended its copy: this one must run. Otherwise the source resumes.
          ctx.log.warn({ session: id, afterMs: ctx.config.incomingTimeoutMs, complete: postCopy.complete }, 'no commit from the source in time for a post-copy move');
          void abortIncoming(ctx, id).catch((err: unknown) => ctx.log.warn({ session: id, err: errorMessage(err) }, 'post-copy move in settled'));
          return;
        }
        ctx.log.warn({ session: id, afterMs: ctx.config.incomingTimeoutMs }, 'no commit from the source in time: the moved-in copy is killed and its verified image kept in the store');
        void abortIncoming(ctx, id, { keepInStore: true }).catch((err: unknown) => ctx.log.error({ session: id, err: errorMessage(err) }, 'could not abort a move in'));
      }, ctx.config.incomingTimeoutMs);
      timer.unref();
      const pid = restored.session.pid;
      const announcer = pid !== null ? await prepareAnnounce(pid, restored.session.network.gateway) : undefined;
      ctx.incoming.set(id, { work, manifest, timer, guardPid, postCopy, announcer, lazy: restored.lazy });
      const restoreSeconds = (performance.now() - r0) / 1000;
      ctx.log.info({ session: id, verifySeconds, restoreSeconds, landingSeconds: await landing?.ready }, 'moved-in copy restored, stopped until its source commits');
      // The images stay until the commit's lazy transfer is done, or the abort has finished with them.
      return { session: restored.session, verifySeconds, restoreSeconds, pushedBytes };
    } catch (err) {
      if (daemon) {
        daemon.daemon.kill();
        await daemon.daemon.exited;
      }
      await dropStaged();
      if (guardPid !== null) await stopIncomingGuard(guardPid, work);
      await forgetIncoming(ctx.config.dataDir, id);
      if (previous) await ctx.registry.put(previous);
      else await ctx.registry.remove(id);
      await rm(work, { recursive: true, force: true });
      throw err;
    }
  });
}

/**
 * Makes a moved-in session's namespace under its staging name while the move
 * streams (before the source freezes it). undefined if that failed: the
 * restore then makes it in the frozen window, as before.
 */
async function stageNetwork(ctx: AgentContext, s: Session): Promise<NetworkNames | undefined> {
  const names = stagingNetworkNames(s.id);
  try {
    await prepareSessionNetwork(names, s.network, ctx.config.bridge, stagingOwner(ctx.config.dataDir));
    return names;
  } catch (err) {
    ctx.log.warn({ session: s.id, err: errorMessage(err) }, "the moved-in session's network could not be made ahead; the restore makes it");
    await removeNamedNetwork(names).catch(() => undefined);
    return undefined;
  }
}

/**
 * A post-copy transfer whose link died silently never fails by itself: the
 * daemon and the source's criu wait on a TCP connection that no longer
 * carries anything, and the copy here blocks on its next missing page. While
 * the daemon runs, its connection to the page server must keep receiving; if
 * it has not for the move's idle timeout, or the copy has exited, the daemon
 * is killed, and with it the copy (see watchLazyPages). The source gives up
 * after the same time and resumes its own.
 */
function watchForStall(ctx: AgentContext, id: string, pid: number, breakTransfer: () => void, pageServer: PageServerAt, exit: Promise<unknown>): void {
  watchTransfer(ctx, id, exit, {
    what: 'a post-copy transfer',
    intervalMs: 1_000,
    read: () => bytesReceivedFrom(pageServer),
    ended: async () => {
      if (await isAlive(pid)) return false;
      // The copy died here (killed, or crashed): the daemon would wait on the source for ever.
      ctx.log.error({ session: id }, 'a post-copy copy exited while its memory was arriving; ending its lazy-pages daemon (the source resumes its own)');
      breakTransfer();
      return true;
    },
    onStall: (received) => {
      ctx.log.error({ session: id, stalledMs: ctx.config.moveIdleTimeoutMs, received }, 'no page of the post-copy transfer arrived for the move idle timeout; killing the lazy-pages daemon and the copy');
      breakTransfer();
    },
  });
}

/** The source has let go: the moved-in session runs. Idempotent: a running session is simply returned. */
export async function commitIncoming(ctx: AgentContext, id: string): Promise<Session> {
  const move = ctx.incoming.get(id);
  if (!move) {
    const s = ctx.registry.find(id);
    if (s?.state === 'running') return s;
    throw new NotFoundError(`no move of session ${id} is waiting for its commit here (it was aborted, or timed out after ${ctx.config.incomingTimeoutMs / 1000} s)`);
  }
  clearTimeout(move.timer);
  ctx.incoming.delete(id);
  // The guard must be gone before the session runs, or it would kill it.
  if (move.guardPid !== null && !(await stopIncomingGuard(move.guardPid, move.work))) {
    move.announcer?.cancel();
    await forgetIncoming(ctx.config.dataDir, id);
    throw new NotFoundError(`the move of session ${id} timed out here before its commit; its copy was killed`);
  }
  // From here the copy here is the session's only one: a restarted agent runs it.
  await recordIncoming(ctx.config.dataDir, { sessionId: id, work: move.work, manifest: move.manifest, guardPid: null, committed: true });
  // Back where it was moved from: its address is held by its own record again (a chain of records would go round).
  await ctx.lent.forget(id);
  try {
    return await ctx.registry.exclusive(id, 'start moved in', () => startRestored(ctx, ctx.registry.get(id), move.announcer, move.lazy ?? undefined), { finishesHandOver: true });
  } finally {
    await forgetIncoming(ctx.config.dataDir, id);
    // Once its memory has all arrived, however long that takes: a timeout here, unhandled, once ended the agent.
    void ctx.lazy
      .ended(id)
      .then(() => rm(move.work, { recursive: true, force: true }))
      .catch((err: unknown) => ctx.log.warn({ session: id, work: move.work, err: errorMessage(err) }, "a moved-in session's work directory could not be removed"));
  }
}

/**
 * Kills a moved-in copy that was not committed, and forgets it. Refused
 * (409) once committed: then the session runs here and the source must let
 * go. Nothing to abort is not an error. `keepInStore` (a commit that never
 * came): the verified image is first committed to the store as a checkpoint,
 * so a session whose source vanished after the freeze is never lost; if the
 * source only lost touch and resumes its own copy, the checkpoint is merely
 * an extra one.
 */
export async function abortIncoming(ctx: AgentContext, id: string, opts: { keepInStore?: boolean } = {}): Promise<void> {
  // A stop-and-copy move that failed before its stream ended: its page server goes.
  await dropPushedPages(ctx, id);
  const move = ctx.incoming.get(id);
  if (!move) {
    if (ctx.registry.find(id)?.state === 'running') throw new ConflictError(`the move of session ${id} was committed: it runs here`);
    return;
  }
  if (move.postCopy) {
    // The daemon goes first: its broken connection is what tells the source's criu to resume its copy.
    // A daemon that has just told the source it is done is let finish: the source's copy is going.
    if (!move.postCopy.complete && !(await lazyTransferHandedOver(move.postCopy.lazy.log))) move.postCopy.lazy.kill();
    if ((await move.postCopy.lazy.outcome) === 'complete') {
      // Every page had arrived, so the source's criu has ended its copy: this is the only one, and it runs.
      await commitIncoming(ctx, id);
      throw new ConflictError(`session ${id} had all its memory here when the abort came (the source's copy is gone): it runs here`);
    }
  }
  clearTimeout(move.timer);
  ctx.incoming.delete(id);
  move.announcer?.cancel();
  if (move.guardPid !== null) await stopIncomingGuard(move.guardPid, move.work);
  await discardIncoming(ctx, id, move, opts.keepInStore === true && !move.postCopy);
  ctx.log.warn({ session: id }, 'move in aborted');
}

/**
 * Kills a moved-in copy (by its record's pid, else by its restore's pid
 * file), drops its network and its record, and forgets the move.
 * `keepInStore`: its verified image is first kept as a checkpoint (a
 * post-copy image holds no memory: never). Its guard must be stopped first.
 */
async function discardIncoming(ctx: AgentContext, id: string, move: Pick<IncomingMove, 'work' | 'manifest'>, keepInStore: boolean): Promise<void> {
  const s = ctx.registry.find(id);
  const pid = s?.pid ?? (await restoredServerPid(incomingImages(move.work), id));
  if (pid !== null) await killSession(pid);
  await removeSessionNetwork(id, (s ?? move.manifest.session).network).catch(() => undefined);
  // Killed before its processes had the session's names.
  await removeNamedNetwork(stagingNetworkNames(id)).catch(() => undefined);
  await ctx.registry.remove(id);
  await forgetIncoming(ctx.config.dataDir, id);
  if (keepInStore) {
    try {
      const checkpoint = await keepInStoreAsCheckpoint(ctx, move);
      // Listed (and pushed) as checkpointed here: the scheduler learns where it is if its source went quiet.
      await ctx.registry.put({ ...move.manifest.session, state: 'checkpointed', pid: null, lastCheckpoint: checkpoint, error: null });
    } catch (err) {
      ctx.log.error({ session: id, err: errorMessage(err), images: move.work }, 'could not keep a moved-in image in the store; it stays on disk');
      return;
    }
  }
  await rm(move.work, { recursive: true, force: true });
}

/**
 * After an agent restart: settles every move in that the last agent left
 * (its record, see IncomingCopy), before sessions are reconciled. A copy
 * the source let go of runs here: one committed, or post-copy one whose
 * lazy-pages daemon handed the transfer over (the source's criu then ended
 * its own). Any other is killed: its source resumes its own (post-copy,
 * once the daemon's connection is reset here), and a stop-and-copy image is
 * kept in the store, as when no commit comes in time.
 */
export async function settleIncoming(ctx: AgentContext): Promise<void> {
  for (const c of await listIncoming(ctx.config.dataDir)) {
    const id = c.sessionId;
    const images = incomingImages(c.work);
    try {
      if (c.guardPid !== null) await stopIncomingGuard(c.guardPid, c.work);
      // criu finishes a restore whose agent died inside it: its pid file is written as it exits.
      await waitFor('criu restore of a moved-in session to end', async () => ((await processesWithArgs(['restore', images])).length > 0 ? undefined : true), { timeoutMs: ctx.config.restoreTimeoutMs, intervalMs: 50 }).catch(() => undefined);
      // The last agent held its daemon stopped until the commit (restoreFromImages): from here it goes on as it
      // would have (bringing the memory in, or noticing its copy gone), whatever is decided below.
      const held = await lazyDaemonServing(images);
      if (held !== null) killQuietly(held, 'SIGCONT');
      let runs = c.committed;
      const pageServer = c.manifest.pageServer;
      if (!c.committed && pageServer) {
        const log = lazyPagesFiles(images).log;
        const daemon = await lazyDaemonServing(images);
        if (daemon !== null && !(await lazyTransferHandedOver(log))) await breakLazyTransfer(pageServer, daemon);
        if (daemon !== null) await waitFor('the lazy-pages daemon to end', async () => ((await isAlive(daemon)) ? undefined : true), { timeoutMs: ctx.config.moveIdleTimeoutMs, intervalMs: 50 }).catch(() => undefined);
        runs = await lazyTransferHandedOver(log);
      }
      const pid = await restoredServerPid(images, id);
      const s = ctx.registry.find(id);
      if (runs && pid !== null && s) {
        ctx.log.warn({ session: id, pid, committed: c.committed }, 'the last agent stopped while this session moved in, after its source let go: its copy here runs');
        await ctx.registry.exclusive(id, 'start moved in', async () => startRestored(ctx, await connectRestored(ctx, s, pid, c.manifest.netnsOutside === true)), { finishesHandOver: true });
        await forgetIncoming(ctx.config.dataDir, id);
        await rm(c.work, { recursive: true, force: true });
      } else if (runs && pageServer) {
        // Let go of by its source, and gone here: its memory went with it.
        ctx.log.error({ session: id }, 'the last agent stopped while this session moved in post-copy; its copy here is gone after its source let go');
        if (s) await ctx.registry.update(id, { state: 'failed', pid: null, error: 'the agent stopped while the session moved in post-copy, and its copy exited' });
        await forgetIncoming(ctx.config.dataDir, id);
        await rm(c.work, { recursive: true, force: true });
      } else {
        // Not let go of: the source runs it. A stop-and-copy image holds all of it: kept in the store in any case.
        ctx.log.warn({ session: id, pid, committed: c.committed }, 'the last agent stopped while this session moved in: its copy here is killed (its source runs it; a full image is kept in the store)');
        await discardIncoming(ctx, id, c, !pageServer);
      }
    } catch (err) {
      ctx.log.error({ session: id, err: errorMessage(err), work: c.work }, 'could not settle a move in the last agent left');
    }
  }
  // Networks made ahead for moves the last agent never got to restore (those it did are settled above).
  const staged = await removeStagedNetworks(stagingOwner(ctx.config.dataDir)).catch(() => []);
  if (staged.length > 0) ctx.log.warn({ sessions: staged }, 'removed the networks made ahead for moves in that the last agent left');
}

/** Commits a moved-in image, verified on arrival, to the store as a checkpoint of its session. */
async function keepInStoreAsCheckpoint(ctx: AgentContext, move: Pick<IncomingMove, 'work' | 'manifest'>): Promise<string> {
  const images = incomingImages(move.work);
  const side = join(move.work, SIDE_FILES_DIR);
  // The restore wanted the side files inside the image directory; the store keeps them apart.
  if (await pathExists(join(images, SIDE_FILES_DIR))) await rename(join(images, SIDE_FILES_DIR), side);
  // Only criu's images: a lazy-pages socket may be left in there.
  for (const name of await readdir(images)) if (!(await lstat(join(images, name))).isFile()) await rm(join(images, name), { force: true });
  const checkpoint = newCheckpointId();
  const m = move.manifest;
  const log = join(side, 'server.log');
  await writeCheckpoint({
    store: ctx.store.forUser(m.session.user),
    imagesDir: images,
    sideFiles: (await pathExists(log)) ? [{ name: 'server.log', path: log }] : [],
    compression: ctx.config.compression,
    manifest: {
      id: checkpoint,
      sessionId: m.session.id,
      createdAt: new Date().toISOString(),
      criu: m.criu,
      kernel: m.kernel,
      leaveRunning: false,
      dumpSeconds: m.dumpSeconds,
      netnsOutside: m.netnsOutside,
      session: { ...m.session, state: 'checkpointed', pid: null, lastCheckpoint: checkpoint },
    },
  });
  ctx.log.warn({ session: m.session.id, checkpoint }, 'a moved-in session whose source never committed is kept in the store');
  return checkpoint;
}
