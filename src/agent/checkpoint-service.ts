import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { ConflictError, StoreError, errorMessage, newCheckpointId } from '../core/index.js';
import type { CheckpointManifest, CheckpointResult, FileDigest, PageServerAt } from '../core/checkpoint.js';
import type { Session } from '../core/session.js';
import { CriuError } from '../core/errors.js';
import { dump, restore, type DumpOptions as CriuDumpOptions } from '../criu/driver.js';
import { lazyTransferHandedOver, startLazyPages, type LazyPagesDaemon } from '../criu/lazy-pages.js';
import { diagnoseCriuLogFile } from '../criu/log.js';
import { pageImagesInUse, restoreEagerly } from '../criu/pagemap.js';
import { skipNetworkUnlock } from '../criu/inventory.js';
import { readCheckpoint } from '../images/checkpoint-reader.js';
import { expireCheckpoints } from '../images/retention.js';
import { PAGE_IMAGE, SIDE_FILES_DIR, writeCheckpoint } from '../images/checkpoint-writer.js';
import { GrowingFileHasher } from '../images/growing-file-hasher.js';
import { PageCapture, PageCaptureUnavailable } from '../images/page-capture.js';
import { isAlive, killQuietly, processTree } from '../util/proc.js';
import type { AgentContext } from './agent-context.js';
import { announce, type PreparedAnnounce, attachSessionNetns, claimSessionNetns, createSessionNetwork, dropNetnsName, netnsFile, netnsOf, ownNetworkNames, prepareSessionNetwork, removeNamedNetwork, removeSessionNetwork, type NetnsId, type NetworkNames } from './network.js';
import { sampleProcesses } from './metrics.js';
import { SERVER_VPID, killSession, prepareSessionFiles, restoredPidFile, sessionPaths } from './sandbox.js';
import { resumeAfterFailedDump, waitForServer } from './session-service.js';
import { lazyRestoreBlocker } from '../criu/transparent-huge-pages.js';

/** How a dump uses the hook: it is lazy (post-copy), or its page images go through a capture (its control directory). */
interface HookUse {
  lazy?: boolean;
  captureDir?: string;
  /** criu leaves the tasks stopped (--leave-stopped): the hook need not wait for the capture. */
  stopped?: boolean;
}

/** The hook's environment: a dump gives its side-file directory, or says it is lazy (post-copy). */
function hookEnv(ctx: AgentContext, s: Session, dump?: HookUse & { sideDir: string }): Record<string, string> {
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
function actionScriptFor(ctx: AgentContext, hubshiftNeedsIt: boolean): string | undefined {
  return hubshiftNeedsIt || ctx.config.criuActionScript ? ctx.criuHook : undefined;
}

function logPath(ctx: AgentContext, name: string): string {
  return join(ctx.config.dataDir, 'logs', name);
}

/** A session dumped into a local work directory, not yet stored or sent anywhere. */
export interface LocalDump {
  /** Also the tag of criu's logs. */
  checkpoint: string;
  work: string;
  images: string;
  /** Files outside the image directory that go with it (the server's log, copied at post-dump). */
  side: string;
  pageDigests: Map<string, FileDigest> | undefined;
  dumpSeconds: number;
  /** performance.now() when criu started, and froze the session. */
  frozenAt: number;
  /** The session as it was dumped. */
  session: Session;
  /** Its network namespace was left out of the images (netnsLeftOut). */
  netnsOutside: boolean;
}

export interface DumpOptions {
  leaveRunning: boolean;
  /**
   * criu leaves the dumped tree stopped (--leave-stopped), network still
   * locked, instead of killing it: the caller kills it once the dump is
   * safe, or resumes it (resumeAfterFailedDump) if it is not.
   */
  leaveStopped?: boolean;
  prefix: string;
  hashPages: boolean;
  /** Page images are not flushed to disk (a move's local copy, kept only for a rollback). */
  volatile?: boolean;
  /**
   * Drops the session's namespace name once criu has dumped it (a checkpoint
   * that ends the session), while the page images are finished; a session
   * resumed after a failure gets it back (resumeAfterFailedDump).
   */
  dropNetnsName?: boolean;
  /** Called with the page images' bytes while criu writes them (a move streams them); must not throw. */
  pageSink?: (name: string, chunk: Buffer) => Promise<void>;
  /**
   * Page images go through the agent's capture (images/page-capture.ts):
   * hashed and written past the page cache as criu dumps them. Needs
   * hashPages and a durable dump without a pageSink.
   */
  capturePages?: boolean;
}

/** A dump about to start: the session marked checkpointing, its work directory named. */
export interface DumpStart {
  s: Session;
  checkpoint: string;
  work: string;
  images: string;
  side: string;
  /** The session's network namespace here: a move drops its name once the session runs elsewhere (dropMovedNetns). */
  netns: NetnsId | null;
}

/**
 * Checks that a session can be dumped, waits for memory still arriving from
 * its last lazy restore, and marks it checkpointing. Call inside the
 * session's exclusive operation.
 */
export async function beginDump(ctx: AgentContext, id: string, prefix: string): Promise<DumpStart> {
  const s = ctx.registry.get(id);
  if (s.state !== 'running' || s.pid === null || !(await isAlive(s.pid))) {
    throw new ConflictError(`session ${id} is ${s.state === 'running' ? 'not answering (its processes are gone)' : s.state}; only a running session can be dumped`);
  }
  // Not to be held up by it, nor to dump pages it is moving.
  await ctx.hugePages.stop(id);
  // After a lazy restore, pages not yet arrived would be dumped as never touched.
  if (ctx.lazy.isArriving(id)) {
    ctx.registry.report(id, 'waiting for memory from the last restore');
    await ctx.lazy.settled(id, ctx.config.restoreTimeoutMs);
  }
  const checkpoint = newCheckpointId();
  const work = join(ctx.config.workDir, `${prefix}${checkpoint}`);
  const netns = await netnsOf(s.pid);
  return { s: await ctx.registry.update(id, { state: 'checkpointing' }), checkpoint, work, images: join(work, 'images'), side: join(work, SIDE_FILES_DIR), netns };
}

/**
 * What every criu dump of a session is given: its images, log, hook and
 * timeout, and its network namespace left out of the images (criu's external
 * namespace) where it is known: dumping it took criu 0.03-0.065 s of every
 * dump (`ip` and `iptables-save` runs and every link's sysctls). The restore,
 * here or on a move's target, makes it again (restoreFromImages' netnsOutside).
 */
export function dumpArgs(ctx: AgentContext, d: DumpStart, use: HookUse = {}): Omit<CriuDumpOptions, 'leaveRunning'> {
  return {
    pid: d.s.pid as number,
    externalNetnsIno: netnsLeftOut(d) ? d.netns?.ino : undefined,
    imagesDir: d.images,
    logFile: logPath(ctx, `${d.checkpoint}-dump.log`),
    // A lazy dump's post-dump does nothing of hubshift's (see hookEnv).
    actionScript: actionScriptFor(ctx, !use.lazy),
    env: hookEnv(ctx, d.s, { ...use, sideDir: d.side }),
    timeoutMs: ctx.config.dumpTimeoutMs,
    fileValidation: ctx.config.fileValidation,
    logLevel: ctx.config.criuLogLevel,
  };
}

/** Whether the dump leaves the session's network namespace out of its images (dumpArgs): where it knows the namespace. */
export function netnsLeftOut(d: DumpStart): boolean {
  return d.netns !== null;
}

/** A lazy dump's side files, copied once its page server listens (the session stays frozen until the last page). */
export async function copyFrozenLog(ctx: AgentContext, d: DumpStart): Promise<void> {
  // Synchronously, in the frozen window, as placeSideFiles.
  mkdirSync(d.side, { recursive: true });
  copyFileSync(sessionPaths(ctx.config.dataDir, d.s).log, join(d.side, 'server.log'));
}

/** A dump failed: criu leaves a live tree, perhaps locked; make it whole (or mark it failed), drop the work directory. */
export async function rollBackDump(ctx: AgentContext, d: DumpStart, err: unknown): Promise<void> {
  const resumed = await resumeAfterFailedDump(ctx, d.s);
  await rm(d.work, { recursive: true, force: true });
  await ctx.registry.update(d.s.id, resumed ? { state: 'running' } : { state: 'failed', pid: null, error: errorMessage(err) });
  ctx.log.error({ session: d.s.id, err: errorMessage(err), resumed }, 'dump failed');
}

/**
 * Dumps a running session into a local work directory (criu stops it unless
 * leaveRunning). Page images are hashed and flushed while criu writes them. A
 * failed dump is rolled back: the session is resumed (or marked failed when
 * its processes are gone) and the error thrown. Call inside the session's
 * exclusive operation.
 */
export async function dumpLocally(ctx: AgentContext, id: string, opts: DumpOptions): Promise<LocalDump> {
  const progress = (step: string, done?: number, total?: number): void => ctx.registry.report(id, step, done, total);
  const d = await beginDump(ctx, id, opts.prefix);
  const { checkpoint, work, images, side, s } = d;
  // The image is about the size of the session's memory: the estimate that dump progress is shown against.
  const { rssBytes: estimate, processes } = await sampleProcesses(s.pid as number);
  let dumped = 0;
  const onBytes = (n: number): void => progress('dumping', (dumped += n), estimate);
  progress('dumping', 0, estimate);
  let capture: PageCapture | undefined;
  let hasher: GrowingFileHasher | undefined;
  try {
    if (opts.capturePages && opts.hashPages) capture = await startCapture(ctx, d, processes, onBytes);
  } catch (err) {
    await rollBackDump(ctx, d, err);
    throw err;
  }
  if (!capture && opts.hashPages) hasher = new GrowingFileHasher(images, { match: PAGE_IMAGE, durable: !opts.volatile, sink: opts.pageSink, onBytes }).start();
  // criu leaves the tasks stopped, not killed: the hook need not wait for the capture, nor copy the log.
  const stopped = opts.leaveStopped === true && !opts.leaveRunning;
  const frozenAt = performance.now();
  let unnamed: Promise<void> | undefined;
  try {
    const { seconds } = await dump(ctx.criu, {
      ...dumpArgs(ctx, d, { captureDir: capture?.controlDir, stopped }),
      leaveRunning: opts.leaveRunning,
      extraArgs: stopped ? ['--leave-stopped'] : undefined,
    });
    // An `ip` run, 10-15 ms (half of it this process forking): the capture's last writes take as long, and need no CPU here.
    unnamed = opts.dropNetnsName ? dropNetnsName(id) : undefined;
    const [pageDigests] = await Promise.all([capture ? capture.finish(await pageImagesInUse(images)) : hasher?.finish(), stopped ? copyFrozenLog(ctx, d) : undefined, unnamed]);
    return { checkpoint, work, images, side, pageDigests, dumpSeconds: seconds, frozenAt, session: s, netnsOutside: netnsLeftOut(d) };
  } catch (err) {
    // Gone before the rollback looks for it, so that it puts it back.
    await unnamed?.catch(() => undefined);
    await hasher?.abort();
    const why = await capture?.failure();
    await capture?.abort();
    await rollBackDump(ctx, d, err);
    if (why) {
      const resumed = ctx.registry.find(id)?.state === 'running';
      throw new StoreError(`checkpoint of session ${id} failed writing its memory under ${ctx.config.workDir}: ${why}; ${resumed ? 'the session was resumed' : 'the session could not be resumed (see its error)'}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Starts catching a dump's page images: one pipe for each process of the
 * session (criu numbers the images from 1, one for each process with memory)
 * and two for shared memory; criu writes any beyond those itself. Falls back
 * to criu writing them (undefined) where the helper cannot run.
 */
async function startCapture(ctx: AgentContext, d: DumpStart, processes: number, onBytes: (n: number) => void): Promise<PageCapture | undefined> {
  const controlDir = join(d.work, 'capture');
  await mkdir(d.images, { recursive: true });
  await mkdir(controlDir, { recursive: true });
  const names = Array.from({ length: processes + 2 }, (_, i) => `pages-${i + 1}.img`);
  try {
    return await PageCapture.start({ imagesDir: d.images, controlDir, names, onBytes }, ctx.captureHelpers);
  } catch (err) {
    if (!(err instanceof PageCaptureUnavailable)) throw err;
    ctx.log.warn({ session: d.s.id, err: errorMessage(err) }, 'page images are written by criu itself');
    await rm(controlDir, { recursive: true, force: true });
    return undefined;
  }
}

/**
 * Freezes a running session into the store. criu leaves the dumped session
 * stopped, its network locked; it is killed only once the manifest is
 * committed, and its network namespace and local images dropped then. If
 * storing fails, the stopped session is resumed where it was (or, were its
 * processes gone, restored from the local images), so it is never lost.
 */
export async function checkpointSession(ctx: AgentContext, id: string, opts: { leaveRunning: boolean }): Promise<CheckpointResult> {
  const progress = (step: string, done?: number, total?: number): void => ctx.registry.report(id, step, done, total);
  const started = performance.now();
  return ctx.registry.exclusive(id, 'checkpoint', async () => {
    // Only uncompressed images are stored as written; compressed ones are hashed after compression.
    // Stopped, not killed, by criu: killing a tree that holds a gigabyte took criu 0.08-0.1 s, which the commit need not wait for.
    const d = await dumpLocally(ctx, id, { leaveRunning: opts.leaveRunning, leaveStopped: true, prefix: '', hashPages: ctx.config.compression === 'none', capturePages: true, dropNetnsName: !opts.leaveRunning });
    const { checkpoint, work, images, side, dumpSeconds } = d;
    const s = d.session;
    progress('storing');
    const storing = performance.now();
    let manifest: CheckpointManifest;
    try {
      manifest = await writeCheckpoint({
        pageDigests: d.pageDigests,
        store: ctx.store.forUser(s.user),
        imagesDir: images,
        sideFiles: [{ name: 'server.log', path: join(side, 'server.log') }],
        compression: ctx.config.compression,
        manifest: {
          id: checkpoint,
          sessionId: id,
          createdAt: new Date().toISOString(),
          criu: { version: ctx.criu.version, source: ctx.criu.source },
          kernel: release(),
          leaveRunning: opts.leaveRunning,
          dumpSeconds,
          netnsOutside: d.netnsOutside,
          session: { ...s, state: 'checkpointed', pid: null, lastCheckpoint: checkpoint },
        },
        onProgress: (d, t) => progress('storing', d, t),
      });
    } catch (err) {
      ctx.log.error({ session: id, err: errorMessage(err) }, 'storing the checkpoint failed; resuming the session');
      await ctx.store.forUser(s.user).delete(checkpoint).catch(() => undefined);
      if (opts.leaveRunning || (await resumeAfterFailedDump(ctx, s))) {
        await rm(work, { recursive: true, force: true });
        await ctx.registry.update(id, { state: 'running' });
      } else {
        // Its stopped processes are gone (killed by someone else): from the local images, plainly, not lazily:
        // this is the rollback, and it should not depend on a daemon.
        await restoreFromImages(ctx, s, images, checkpoint, { lazy: false, netnsOutside: d.netnsOutside }).catch(async (restoreErr: unknown) => {
          await ctx.registry.update(id, { state: 'failed', pid: null, error: `storing failed (${errorMessage(err)}) and the local restore failed too (${errorMessage(restoreErr)}); images kept in ${images}` });
          throw restoreErr;
        });
        await rm(work, { recursive: true, force: true });
      }
      throw err;
    }
    const committed = performance.now();
    // Not waited for: a SIGKILLed tree never runs again, and the kernel frees its memory (0.08-0.1 s for a
    // gigabyte), then its namespace and veth, in its own time.
    if (!opts.leaveRunning) killQuietly(s.pid as number, 'SIGKILL');
    // Independent of each other: the record, the work directory's links (the namespace's name went with the dump).
    await Promise.all([
      ctx.registry.update(id, opts.leaveRunning ? { state: 'running', lastCheckpoint: checkpoint } : { state: 'checkpointed', pid: null, lastCheckpoint: checkpoint }),
      rm(work, { recursive: true, force: true }),
    ]);
    const seconds = (performance.now() - started) / 1000;
    // Seconds of each phase after the dump, for the log.
    const commit = (committed - storing) / 1000;
    const cleanup = (performance.now() - committed) / 1000;
    ctx.log.info({ session: id, checkpoint, bytes: manifest.imageBytes, seconds, dumpSeconds, commit, cleanup }, 'checkpoint committed');
    // Retention after the answer: older checkpoints of this session go, the new one stays.
    void expireCheckpoints(ctx.store.forUser(s.user), id, ctx.config.keepCheckpoints, [checkpoint]).then(
      (gone) => gone.length && ctx.log.info({ session: id, expired: gone }, 'older checkpoints expired'),
      (err: unknown) => ctx.log.warn({ session: id, err: errorMessage(err) }, 'expiring older checkpoints failed; they stay until the next checkpoint'),
    );
    // The next checkpoint's capture helper, started once this one has answered: left to the helper's own end
    // (500 ms after), checkpoints one after another (an evacuation) waited up to 0.1 s for its start.
    setImmediate(() => ctx.captureHelpers.warm());
    return { checkpoint, bytes: manifest.imageBytes, seconds };
  });
}

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
function watchLazyPages(ctx: AgentContext, s: Session, pid: number, outcome: Promise<LazyOutcome>, logFile: string, postCopy: boolean): Promise<void> {
  return outcome.then(async (o) => {
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

/** A lazy-pages daemon serving an image directory, and its log. */
export interface EarlyLazyPages {
  daemon: LazyPagesDaemon;
  log: string;
}

/** What a restore's first attempt finds ready: a lazy-pages daemon, and the session's network made ahead (its names). */
export interface EarlyRestore {
  lazy?: EarlyLazyPages;
  netns?: NetworkNames;
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
  return { daemon: await startLazyPages(ctx.criu, images, log, { pageServer, guardedElsewhere: pageServer !== undefined }), log };
}

/**
 * Starts the lazy-pages daemon, clears the session's old network names and,
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
    }
    if (lazyRestoreHere(ctx)) out.lazy = await startDaemon(ctx, images, tag);
  } catch (err) {
    ctx.log.warn({ session: s.id, err: errorMessage(err) }, 'preparing the restore early failed; the restore does it');
  }
  return out;
}

/** Undoes what was made early for a restore that will not run. */
export async function dropEarly(early: EarlyRestore | undefined): Promise<void> {
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
  opts: { lazy: boolean; leaveStopped?: boolean; early?: EarlyRestore; pageServer?: PageServerAt; netnsOutside?: boolean },
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
  const attempt = async (lazy: boolean): Promise<{ pid: number; seconds: number }> => {
    const started = early;
    early = undefined;
    const ahead = opts.netnsOutside ? started?.netns : undefined;
    if (started?.netns && !ahead) await removeNamedNetwork(started.netns);
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
    // Beside the daemon's start and the network's (processes of their own), awaited before criu restore.
    prepared = (async () => {
      await placeSideFiles(ctx, s, images);
      // A namespace made here is locked by its bridge end, down while criu restores, not by criu.
      if (opts.netnsOutside) await skipNetworkUnlock(images);
    })();
    void prepared.catch(() => undefined);
    const postCopy = opts.pageServer !== undefined;
    const lazy = postCopy || (opts.lazy && lazyRestoreHere(ctx));
    // The server (PID 1 of the session) answers first, so its memory comes back eagerly: its faults would
    // otherwise wait on the daemon, one page at a time, between chunks of the kernels' memory.
    // (Post-copy cannot: its pages are on the source.)
    if (lazy && !postCopy) {
      await restoreEagerly(images, SERVER_VPID).catch((err: unknown) => ctx.log.warn({ session: s.id, err: errorMessage(err) }, 'the server\'s memory stays lazy'));
    }
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
    const released = serving ? watchLazyPages(ctx, restoring, pid, serving.outcome, daemonLog, postCopy) : Promise.resolve();
    ctx.lazy.track(s.id, released);
    if (serving && ctx.config.sessionHugePages) void released.then(() => collapseOnceSettled(ctx, s.id, pid as number), () => undefined);
    if (opts.leaveStopped) return { session: restoring, released, lazy: serving };
    const running = performance.now();
    const session = await startRestored(ctx, restoring);
    // With lazy pages the server answers once the pages it touches have come.
    const serverSeconds = (performance.now() - running) / 1000;
    ctx.log.info({ session: s.id, criuSeconds: r.seconds, serverSeconds, lazy: daemon !== undefined }, 'criu restore done and server answering');
    return { session, released, lazy: serving };
  } catch (err) {
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
    try {
      progress('fetching and verifying');
      const t0 = performance.now();
      await readCheckpoint({
        store: ctx.store,
        checkpointId: checkpoint,
        destDir: images,
        hashingHelpers: ctx.hashingHelpers,
        onProgress: (d, t) => progress('fetching and verifying', d, t),
        onMetaReady: () => (early = startEarly(ctx, s, images, checkpoint, manifest.netnsOutside === true)),
      }).catch(async (err: unknown) => {
        await dropEarly(await early);
        throw err;
      });
      progress('restoring');
      const verifySeconds = (performance.now() - t0) / 1000;
      const restored = await restoreFromImages(ctx, s, images, checkpoint, { lazy: true, early: await early, netnsOutside: manifest.netnsOutside === true });
      released = restored.released;
      const running = restored.session;
      const seconds = (performance.now() - started) / 1000;
      ctx.log.info({ session: id, checkpoint, seconds, verifySeconds, pid: running.pid }, 'session restored');
      return { session: running, seconds };
    } catch (err) {
      await ctx.registry.put({ ...previous, state: previous.state === 'running' ? 'checkpointed' : previous.state, pid: null, error: null });
      ctx.log.error({ session: id, checkpoint, err: errorMessage(err) }, 'restore failed');
      throw err;
    } finally {
      // The images stay until a lazy-pages daemon has served the last page.
      void released.finally(() => rm(work, { recursive: true, force: true }));
    }
  });
}
