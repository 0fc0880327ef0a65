// Restores: criu restore from verified local images (a checkpoint's, or a move's), lazily where it can, and the
// session connected and running again.
import { copyFileSync, existsSync, renameSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, errorMessage } from '../core/index.js';
import type { PageServerAt } from '../core/checkpoint.js';
import type { Session } from '../core/session.js';
import { CriuError } from '../core/errors.js';
import { restore } from '../criu/driver.js';
import { lazyTransferHandedOver, startLazyPages, type LazyPagesDaemon } from '../criu/lazy-pages.js';
import { diagnoseCriuLogFile } from '../criu/log.js';
import { restoreEagerly } from '../criu/pagemap.js';
import { skipNetworkUnlock } from '../criu/inventory.js';
import { readCheckpoint } from '../images/checkpoint-reader.js';
import { SIDE_FILES_DIR } from '../images/checkpoint-writer.js';
import { HOT_PAGES_FILE, applyHotPages, hotPagesPath, readHotPages, recordHotPages, type HotPages } from './hot-pages.js';
import { isAlive, killQuietly, processTree } from '../util/proc.js';
import type { AgentContext } from './agent-context.js';
import type { LandingHold } from './landing-memory.js';
import { announce, prepareAnnounce, type PreparedAnnounce, attachSessionNetns, claimSessionNetns, createSessionNetwork, netnsFile, ownNetworkNames, prepareSessionNetwork, removeNamedNetwork, removeSessionNetwork, type NetworkNames } from './network.js';
import { SERVER_VPID, killSession, prepareSessionFiles, restoredPidFile, sessionPaths } from './sandbox.js';
import { waitForServer } from './session-service.js';
import { lazyRestoreBlocker } from '../criu/transparent-huge-pages.js';
import { actionScriptFor, hookEnv, logPath } from './criu-run.js';

/**
 * Puts a checkpoint's side files back where the session had them open.
 * Synchronously: a few small files in the page cache, which through libuv's
 * pool (a dozen steps, each waiting for a thread) took 2-20 ms of a move's
 * frozen window here with both cores busy.
 */
async function placeSideFiles(ctx: AgentContext, s: Session, images: string): Promise<void> {
  const paths = sessionPaths(ctx.config.dataDir, s);
  await prepareSessionFiles(paths, s.home);
  const saved = join(images, SIDE_FILES_DIR, 'server.log');
  if (existsSync(saved)) {
    // Keep what the old log had beyond the dump, for the record.
    try {
      renameSync(paths.log, `${paths.log}.before-restore`);
    } catch {
      /* no log before: nothing to keep */
    }
    copyFileSync(saved, paths.log);
  }
  rmSync(join(images, SIDE_FILES_DIR), { recursive: true, force: true });
}

interface Restored {
  session: Session;
  /** Resolves when the image directory is no longer read (a lazy-pages daemon has served every page). */
  released: Promise<void>;
  /** The lazy-pages daemon bringing the memory in; null when the restore was not lazy. */
  lazy: RestoredLazy | null;
}

export type LazyOutcome = 'complete' | 'failed';

/** A lazy restore's daemon, as its callers see it. */
export interface RestoredLazy {
  pid: number;
  log: string;
  /**
   * How the daemon ended: 'complete' (every page arrived, or, in post-copy,
   * the source was told so and has ended its copy) or 'failed'.
   */
  outcome: Promise<LazyOutcome>;
  /** Ends the daemon (post-copy: breaking the transfer so that the source resumes). */
  kill: () => void;
  /** Lets a daemon held stopped while the restored tasks were (a move in's, until its commit) go on; a no-op otherwise. */
  resume: () => void;
}

/** A daemon's end as LazyOutcome (see RestoredLazy.outcome). */
async function lazyOutcomeOf(ctx: AgentContext, s: Session, daemon: LazyPagesDaemon, logFile: string, postCopy: boolean): Promise<LazyOutcome> {
  const code = await daemon.exited;
  if (code === 0) return 'complete';
  if (postCopy && !daemon.broken && (await lazyTransferHandedOver(logFile))) {
    ctx.log.warn({ session: s.id, code, log: logFile }, 'criu lazy-pages exited after telling the source it was done: the source has ended its copy, so this one is kept');
    return 'complete';
  }
  return 'failed';
}

/**
 * After a lazy restore the session's memory is still arriving. If the daemon
 * fails, the session cannot complete: it is stopped and left checkpointed, its
 * checkpoint intact, so a restore can be tried again (post-copy: it is
 * forgotten here, its source resumes it).
 */
function watchLazyPages(ctx: AgentContext, s: Session, pid: number, outcome: Promise<LazyOutcome>, logFile: string, postCopy: boolean, hot: HotPages): Promise<void> {
  return outcome.then(async (o) => {
    // Before the session counts as settled: a checkpoint waits for it, and takes the file along.
    // Post-copy only where the source sent hot pages: else its eager share was whole mappings, which never fault,
    // so the faults alone would leave out the pages those mappings held that the session asked for.
    if (o === 'complete' && (!postCopy || hot.size > 0)) await keepHotPages(ctx, s, logFile, hot);
    // A stopping agent leaves the session to the next one (reconcileSessions settles it).
    if (o === 'complete' || ctx.stopping.signal.aborted) return;
    const current = ctx.registry.find(s.id);
    ctx.log.error({ session: s.id, log: logFile, postCopy }, 'criu lazy-pages failed before all pages arrived');
    if (current?.pid === pid) {
      await killSession(pid);
      await removeSessionNetwork(s.id, s.network).catch(() => undefined);
      if (postCopy) {
        // The rest of its memory was on the source, whose criu let the session run there again when the transfer broke.
        await ctx.registry.remove(s.id);
        return;
      }
      await ctx.registry.update(s.id, {
        state: 'checkpointed',
        pid: null,
        error: `criu lazy-pages failed before the session's memory was complete (log: ${logFile}); it was stopped, restore ${s.lastCheckpoint ?? 'its checkpoint'} again`,
      });
    }
  });
}

/** Records the pages the session faulted on (hot-pages.ts) for its next checkpoint; a failure only loses the hint. */
async function keepHotPages(ctx: AgentContext, s: Session, logFile: string, applied: HotPages): Promise<void> {
  try {
    const pages = await recordHotPages(hotPagesPath(ctx.config.dataDir, s), logFile, applied);
    ctx.log.debug({ session: s.id, pages }, 'hot pages recorded for the next restore');
  } catch (err) {
    ctx.log.warn({ session: s.id, err: errorMessage(err) }, 'could not record the pages the session asked for first; its next restore fetches them lazily');
  }
}

/** A lazy-pages daemon serving an image directory, and its log. */
export interface EarlyLazyPages {
  daemon: LazyPagesDaemon;
  log: string;
}

/** What a restore's first attempt finds ready: a lazy-pages daemon, and the session's network made ahead (its names). */
export interface EarlyRestore {
  lazy?: EarlyLazyPages;
  /** The images are ready for a lazy restore (readyForLazyRestore), these hot pages made eager. */
  hot?: HotPages;
  netns?: NetworkNames;
  /**
   * The session's announcement, ready in `netns` (prepareAnnounce): entering the namespace and starting its shell
   * after criu took 24-26 ms of restores here (2026-12-03); it flushes the neighbour entries the restored sockets'
   * first packets leave unanswered when fired, in startRestored.
   */
  announce?: PreparedAnnounce;
  /** The session's old network (its veth, its namespace's name) is gone already: startEarly removed it. */
  cleared?: boolean;
}

/** Whether this agent restores lazily: allowed by its config and possible with its criu and kernel. */
const lazyRestoreHere = (ctx: AgentContext): boolean => ctx.config.lazyRestore && ctx.criu.lazyPages && lazyRestoreBlocker(ctx.config.transparentHugePagesFile) === null;

/**
 * A move's lazy-pages daemon, started before restoreFromImages where the move
 * in is guarded already (receiveAndRestore); undefined where the restore
 * will not be lazy. Pass it as `early.lazy`; kill it if no restore follows.
 */
export async function startIncomingDaemon(ctx: AgentContext, images: string, tag: string, pageServer?: PageServerAt): Promise<EarlyLazyPages | undefined> {
  return pageServer !== undefined || lazyRestoreHere(ctx) ? startDaemon(ctx, images, tag, pageServer) : undefined;
}

async function startDaemon(ctx: AgentContext, images: string, tag: string, pageServer?: PageServerAt): Promise<EarlyLazyPages> {
  const log = logPath(ctx, `${tag}-lazy-pages-${Date.now()}.log`);
  // Post-copy is a move in, whose guard (armIncomingGuard) ends the daemon if the restore never comes.
  return { daemon: await startLazyPages(ctx.criu, images, log, { pageServer, guardedElsewhere: pageServer !== undefined, ahead: ctx.waitingCriu }), log };
}

/**
 * Readies the images for a lazy restore (readyForLazyRestore: their page
 * images need not be verified for it) and starts the lazy-pages daemon,
 * clears the session's old network names and,
 * for images without the namespace (`netnsOutside`), makes it, while the
 * page images are still being verified: the daemon reads only the small,
 * already verified images until criu restore connects to it, which is after
 * verification. Never rejects (what failed, the restore does itself). The
 * caller kills the daemon and removes the namespace if the restore does not
 * happen.
 */
export async function startEarly(ctx: AgentContext, s: Session, images: string, tag: string, netnsOutside: boolean): Promise<EarlyRestore> {
  const out: EarlyRestore = {};
  try {
    await removeSessionNetwork(s.id, s.network);
    out.cleared = true;
    if (netnsOutside) {
      const own = ownNetworkNames(s.id, s.network);
      await prepareSessionNetwork(own, s.network, ctx.config.bridge);
      out.netns = own;
      out.announce = await prepareAnnounce({ netnsFile: netnsFile(own.netns) }, s.network.gateway, 'eth0', undefined, { flushAtFire: true });
    }
    if (lazyRestoreHere(ctx)) {
      out.hot = await readyForLazyRestore(ctx, s, images);
      out.lazy = await startDaemon(ctx, images, tag);
    }
  } catch (err) {
    ctx.log.warn({ session: s.id, err: errorMessage(err) }, 'preparing the restore early failed; the restore does it');
  }
  return out;
}

/**
 * Edits a verified image directory for a lazy restore from it. The server
 * (PID 1 of the session) answers first, so its memory comes back eagerly:
 * its faults would otherwise wait on the daemon, one page at a time, between
 * chunks of the kernels' memory. So do the pages the session's processes
 * asked for first after their last restore (hot-pages.ts), which it names
 * among its side files: they would each wait likewise. Returns those.
 */
async function readyForLazyRestore(ctx: AgentContext, s: Session, images: string): Promise<HotPages> {
  await restoreEagerly(images, SERVER_VPID).catch((err: unknown) => ctx.log.warn({ session: s.id, err: errorMessage(err) }, "the server's memory stays lazy"));
  const hot = await readHotPages(join(images, SIDE_FILES_DIR, HOT_PAGES_FILE));
  if (hot.size > 0) {
    const eager = applyHotPages(images, hot);
    ctx.log.debug({ session: s.id, pages: eager }, 'hot pages restored eagerly');
  }
  return hot;
}

/** Undoes what was made early for a restore that will not run. */
export async function dropEarly(early: EarlyRestore | undefined): Promise<void> {
  early?.announce?.cancel();
  early?.lazy?.daemon.kill();
  if (early?.netns) await removeNamedNetwork(early.netns).catch(() => undefined);
}

/**
 * Runs criu restore on a verified local image directory and waits until the
 * server answers. Lazily (pages on demand) when allowed and possible; a lazy
 * restore that fails is retried plainly. `early` is a daemon started while the
 * images were verified, for the first lazy attempt. `pageServer` (post-copy):
 * the memory is not in the images but served by the source's criu there; the
 * restore is lazy and has no plain fallback.
 */
export async function restoreFromImages(
  ctx: AgentContext,
  s: Session,
  images: string,
  tag: string,
  opts: { lazy: boolean; leaveStopped?: boolean; early?: EarlyRestore; pageServer?: PageServerAt; netnsOutside?: boolean; landing?: LandingHold },
): Promise<Restored> {
  let pid: number | null = null;
  let daemon: LazyPagesDaemon | undefined;
  let daemonLog = '';
  // Used by the first attempt only (its daemon by a lazy one); killed or dropped if nothing uses it.
  let early = opts.early;
  // The network the restore runs in, when made here: under the session's own names, or its staging ones.
  let netns: NetworkNames | undefined;
  // The side files in place and the images edited for criu (below).
  let prepared: Promise<void> = Promise.resolve();
  const own = ownNetworkNames(s.id, s.network);
  const isOwn = (n: NetworkNames): boolean => n.netns === own.netns && n.hostVeth === own.hostVeth;
  // The session's announcement, made ready with the namespace made early (startEarly), for the attempt that uses it.
  let announcing: PreparedAnnounce | undefined;
  const attempt = async (lazy: boolean): Promise<{ pid: number; seconds: number }> => {
    const started = early;
    early = undefined;
    const ahead = opts.netnsOutside ? started?.netns : undefined;
    if (started?.netns && !ahead) await removeNamedNetwork(started.netns);
    announcing?.cancel();
    announcing = ahead && !opts.leaveStopped ? started?.announce : undefined;
    if (!announcing) started?.announce?.cancel();
    // A retry's network is made afresh, under the session's own names.
    if (netns !== undefined && !isOwn(netns)) await removeNamedNetwork(netns);
    netns = opts.netnsOutside ? (ahead ?? own) : undefined;
    // Images without the namespace: made again (unless made ahead), the bridge's end down until criu has restored the
    // sockets. criu recreates the veth otherwise; a stale one of the same name makes it fail.
    // (Unless startEarly cleared the old one already.)
    const network = opts.netnsOutside
      ? ahead
        ? Promise.resolve()
        : createSessionNetwork(s.id, s.network, ctx.config.bridge, { hostSide: 'down' })
      : started?.cleared
        ? Promise.resolve()
        : removeSessionNetwork(s.id, s.network);
    // Awaited below, after the daemon's start: a failure meanwhile is not unhandled.
    void network.catch(() => undefined);
    if (started?.lazy && lazy) {
      ({ daemon, log: daemonLog } = started.lazy);
    } else {
      started?.lazy?.daemon.kill();
      // Beside the network's ip runs: each is a process or three of its own.
      if (lazy) ({ daemon, log: daemonLog } = await startDaemon(ctx, images, tag, opts.pageServer).catch(async (err: unknown) => {
        await network.catch(() => undefined);
        throw err;
      }));
    }
    await network;
    await prepared;
    // A daemon that fails while criu restores (a page server it cannot reach) would leave criu waiting on it.
    const daemonFailed = new AbortController();
    void daemon?.exited.then((code) => code !== 0 && daemonFailed.abort());
    // From here criu restore connects to it: its orphan guard stands down.
    daemon?.claim();
    // Freed last, so that criu's fill gets it (landing-memory.ts).
    await opts.landing?.release();
    try {
      return await restore(ctx.criu, {
        imagesDir: images,
        logFile: logPath(ctx, `${tag}-restore-${Date.now()}.log`),
        pidFile: restoredPidFile(images),
        externals: opts.netnsOutside ? [] : [`veth[eth0]:${s.network.hostVeth}@${ctx.config.bridge.name}`],
        joinNetns: netns !== undefined ? netnsFile(netns.netns) : undefined,
        actionScript: actionScriptFor(ctx, false),
        env: hookEnv(ctx, s),
        timeoutMs: ctx.config.restoreTimeoutMs,
        lazyPages: lazy,
        // A move restores stopped: it runs only once the source has let go. So does a restore into a namespace made
        // here: its tasks run only once the bridge end is up (startRestored), so their first packets are not lost.
        extraArgs: opts.leaveStopped || opts.netnsOutside ? ['--leave-stopped'] : undefined,
        signal: daemonFailed.signal,
        fileValidation: ctx.config.fileValidation,
        logLevel: ctx.config.criuLogLevel,
        ahead: ctx.waitingCriu,
      });
    } catch (err) {
      daemon?.kill();
      await daemon?.exited;
      daemon = undefined;
      if (daemonFailed.signal.aborted) {
        const d = await diagnoseCriuLogFile(daemonLog);
        throw new CriuError('criu_failed', `criu lazy-pages failed during the restore: ${d.explanation} (log: ${daemonLog})`, d.explanation, daemonLog);
      }
      throw err;
    }
  };
  try {
    const postCopy = opts.pageServer !== undefined;
    const lazy = postCopy || (opts.lazy && lazyRestoreHere(ctx));
    // Read before the side files are put in place, whose directory then goes. Post-copy: the pages the source sent
    // with the images for being hot (embedSessionMemory), which the record of this restore's faults extends. Local
    // images: readied for a lazy restore, unless startEarly did.
    const hot = postCopy ? await readHotPages(join(images, SIDE_FILES_DIR, HOT_PAGES_FILE)) : lazy ? (opts.early?.hot ?? (await readyForLazyRestore(ctx, s, images))) : new Map<number, number[]>();
    // Beside the daemon's start and the network's (processes of their own), awaited before criu restore.
    prepared = (async () => {
      await placeSideFiles(ctx, s, images);
      // A namespace made here is locked by its bridge end, down while criu restores, not by criu.
      if (opts.netnsOutside) await skipNetworkUnlock(images);
    })();
    void prepared.catch(() => undefined);
    let r: { pid: number; seconds: number };
    try {
      r = await attempt(lazy);
    } catch (err) {
      if (!lazy || postCopy || !(err instanceof CriuError)) throw err;
      ctx.log.warn({ session: s.id, err: errorMessage(err) }, 'lazy restore failed; restoring plainly');
      r = await attempt(false);
    }
    pid = r.pid;
    // A move's copy stays stopped until its source commits, so no page can be asked for until then; but the daemon
    // starts bringing the whole memory in at once, and took the CPU from the claim, the answer and the commit on
    // both hosts (post-copy: the source's criu serves it). Held stopped with the tasks, and let go just before them
    // (startRestored); an agent that dies meanwhile leaves it to its successor (settleIncoming) or to the move's guard.
    const d = daemon;
    const held = d !== undefined && opts.leaveStopped === true;
    if (held) killQuietly(d.pid, 'SIGSTOP');
    const restoring = await connectRestored(ctx, s, pid, opts.netnsOutside === true);
    if (netns) netns = own;
    const serving: RestoredLazy | null = d
      ? { pid: d.pid, log: daemonLog, outcome: lazyOutcomeOf(ctx, restoring, d, daemonLog, postCopy), kill: d.kill, resume: held ? () => killQuietly(d.pid, 'SIGCONT') : () => undefined }
      : null;
    const released = serving ? watchLazyPages(ctx, restoring, pid, serving.outcome, daemonLog, postCopy, hot) : Promise.resolve();
    ctx.lazy.track(s.id, released);
    if (serving && ctx.config.sessionHugePages) void released.then(() => collapseOnceSettled(ctx, s.id, pid as number), () => undefined);
    if (opts.leaveStopped) return { session: restoring, released, lazy: serving };
    const running = performance.now();
    const session = await startRestored(ctx, restoring, announcing);
    // With lazy pages the server answers once the pages it touches have come.
    const serverSeconds = (performance.now() - running) / 1000;
    ctx.log.info({ session: s.id, criuSeconds: r.seconds, serverSeconds, lazy: daemon !== undefined }, 'criu restore done and server answering');
    return { session, released, lazy: serving };
  } catch (err) {
    announcing?.cancel();
    early?.announce?.cancel();
    early?.lazy?.daemon.kill();
    daemon?.kill();
    if (pid !== null) await killSession(pid);
    // A network staged and not yet claimed leaves the session's own names alone (on test hosts, the source's namespace).
    await removeNamedNetwork(netns ?? early?.netns ?? own).catch(() => undefined);
    throw err;
  }
}

/**
 * Once a lazy restore has brought all its memory, puts the session's
 * huge-page memory back into huge pages (HugePageCollapses): the lazy-pages
 * daemon filled it 4 KiB at a time. Only if the session still runs as
 * restored (a move in aborted, or the session since removed, is left alone)
 * and no operation is under way on it: a dump stops a collapse in its
 * beginDump, so one must not start after that.
 */
async function collapseOnceSettled(ctx: AgentContext, id: string, pid: number): Promise<void> {
  const pids = await processTree(pid);
  const s = ctx.registry.find(id);
  if (!s || s.state !== 'running' || s.pid !== pid || ctx.registry.progress(id) !== null || ctx.stopping.signal.aborted) return;
  ctx.hugePages.start(id, pids);
}

/**
 * Joins restored processes (`pid`, still stopped) to the bridge and records
 * them: a namespace made here (`netnsOutside`) gets its bridge end up, one
 * criu made gets the session's name.
 */
export async function connectRestored(ctx: AgentContext, s: Session, pid: number, netnsOutside: boolean): Promise<Session> {
  if (netnsOutside) await claimSessionNetns(s.id, s.network, pid);
  else await attachSessionNetns(s.id, pid);
  return ctx.registry.put({ ...s, state: 'restoring', pid, error: null });
}

/**
 * Lets a restored session run: its tasks continued (a move restores them
 * stopped), the bridge taught where its MAC is, and the server answering.
 */
export async function startRestored(ctx: AgentContext, s: Session, announcer?: PreparedAnnounce, lazy?: Pick<RestoredLazy, 'resume'>): Promise<Session> {
  if (s.pid === null) throw new ConflictError(`session ${s.id} has no restored processes to start`);
  // The daemon first: the tasks' first fault would wait on a daemon held stopped.
  lazy?.resume();
  for (const pid of await processTree(s.pid)) killQuietly(pid, 'SIGCONT');
  // The announcement first (19-30 ms at a post-copy commit, beside the lazy transfer's start): until it, this node's bridge may still send the session's MAC out toward the
  // host it came from, where the server's first connection request is lost and TCP tries again only after 1 s
  // (moves' commits took 1.04 s now and then while the two ran side by side).
  await (announcer ? announcer.fire() : announce(s.pid, s.network.gateway));
  await waitForServer(ctx, s);
  return ctx.registry.update(s.id, { state: 'running' });
}

/**
 * Refuses to bring a session here while it runs here already, or while
 * another running session holds its address. Returns what this agent knew
 * of it, if anything.
 */
export async function assertRestorableHere(ctx: AgentContext, s: Session, hint = ''): Promise<Session | undefined> {
  const known = ctx.registry.find(s.id);
  if (known && known.pid !== null && (await isAlive(known.pid))) throw new ConflictError(`session ${s.id} is already running on this agent (pid ${known.pid})${hint}`);
  const clash = ctx.registry.list().find((o) => o.id !== s.id && o.pid !== null && o.network.ip === s.network.ip);
  if (clash) throw new ConflictError(`address ${s.network.ip} of session ${s.id} is held by running session ${clash.id} on this agent`);
  return known;
}

/**
 * Brings a checkpoint back as a running session with the same id, address
 * and token. Every blob is verified against the manifest before criu runs.
 */
export async function restoreCheckpoint(
  ctx: AgentContext,
  checkpoint: string,
  admit: (sessionId: string) => Promise<void> = async () => undefined,
): Promise<{ session: Session; seconds: number }> {
  const started = performance.now();
  const manifest = await ctx.store.getManifest(checkpoint);
  const id = manifest.sessionId;
  await admit(id);
  const progress = (step: string, done?: number, total?: number): void => ctx.registry.report(id, step, done, total);
  const known = await assertRestorableHere(ctx, manifest.session, `; checkpoint or remove it before restoring ${checkpoint}`);
  return ctx.registry.exclusive(id, 'restore', async () => {
    const previous: Session = known ?? { ...manifest.session, state: 'checkpointed', pid: null };
    const s = await ctx.registry.put({ ...manifest.session, state: 'restoring', pid: null, lastCheckpoint: checkpoint, createdAt: previous.createdAt, error: null });
    // Short: the lazy-pages socket lives in here, and socket paths end at 107 bytes.
    const work = join(ctx.config.workDir, `r-${checkpoint}-${Date.now().toString(36)}`);
    const images = join(work, 'images');
    let released: Promise<void> = Promise.resolve();
    let early: Promise<EarlyRestore | undefined> = Promise.resolve(undefined);
    // Warmed beside the verification, freed just before criu restore (landing-memory.ts).
    const landing = ctx.landing.warm();
    try {
      progress('fetching and verifying');
      const t0 = performance.now();
      // Until every blob is verified and linked here: a newer checkpoint's retention would delete it under the read.
      ctx.reading.add(checkpoint);
      await readCheckpoint({
        store: ctx.store,
        checkpointId: checkpoint,
        destDir: images,
        hashingHelpers: ctx.hashingHelpers,
        onProgress: (d, t) => progress('fetching and verifying', d, t),
        onMetaReady: () => (early = startEarly(ctx, s, images, checkpoint, manifest.netnsOutside === true)),
      })
        .catch(async (err: unknown) => {
          await dropEarly(await early);
          throw err;
        })
        .finally(() => ctx.reading.delete(checkpoint));
      progress('restoring');
      const verifySeconds = (performance.now() - t0) / 1000;
      const restored = await restoreFromImages(ctx, s, images, checkpoint, { lazy: true, early: await early, netnsOutside: manifest.netnsOutside === true, landing });
      released = restored.released;
      const running = restored.session;
      const seconds = (performance.now() - started) / 1000;
      ctx.log.info({ session: id, checkpoint, seconds, verifySeconds, landingSeconds: await landing.ready, pid: running.pid }, 'session restored');
      return { session: running, seconds };
    } catch (err) {
      await ctx.registry.put({ ...previous, state: previous.state === 'running' ? 'checkpointed' : previous.state, pid: null, error: null });
      ctx.log.error({ session: id, checkpoint, err: errorMessage(err) }, 'restore failed');
      throw err;
    } finally {
      void landing.release();
      // The images stay until a lazy-pages daemon has served the last page.
      void released.finally(() => rm(work, { recursive: true, force: true }));
    }
  });
}
