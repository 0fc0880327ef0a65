// Dumps: a session frozen into local images (a checkpoint's, or a move's first step), stored, or rolled back.
import { copyFileSync, mkdirSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { ConflictError, StoreError, errorMessage, newCheckpointId } from '../core/index.js';
import type { BlobEntry, CheckpointManifest, CheckpointResult, FileDigest } from '../core/checkpoint.js';
import type { Session } from '../core/session.js';
import { dump, type DumpOptions as CriuDumpOptions } from '../criu/driver.js';
import { pageImagesInUse } from '../criu/pagemap.js';
import { resetLeftOutConnections } from '../criu/left-out-connections.js';
import { expireCheckpoints } from '../images/retention.js';
import { PAGE_IMAGE, SIDE_FILES_DIR, storeMetaBlob, writeCheckpoint } from '../images/checkpoint-writer.js';
import { GrowingFileHasher } from '../images/growing-file-hasher.js';
import type { PackEntry } from '../images/tar-pack.js';
import { PageCapture, PageCaptureUnavailable } from '../images/page-capture.js';
import { pathExists } from '../util/fs.js';
import { isRunningNow, killQuietly } from '../util/proc.js';
import { allSettledOrThrow } from '../util/settled.js';
import type { AgentContext } from './agent-context.js';
import { dropNetnsName, netnsOf, type NetnsId } from './network.js';
import { sampleProcesses } from './metrics.js';
import { sessionPaths } from './sandbox.js';
import { HOT_PAGES_FILE, hotPagesPath } from './hot-pages.js';
import { resumeAfterFailedDump } from './session-service.js';
import { actionScriptFor, hookEnv, logPath, type HookUse } from './criu-run.js';
import { abandonedWithItsAgent, dumpDirName, dumpKindOf, type DumpKind } from './dump-dirs.js';
import { restoreFromImages } from './restore-service.js';

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
  /** What the dump serves: it names its work directory (dump-dirs.ts). */
  kind: DumpKind;
  hashPages: boolean;
  /** Page images are not flushed to disk (a move's local copy, kept only for a rollback). */
  volatile?: boolean;
  /**
   * Drops the session's namespace name while criu dumps it (a checkpoint
   * that ends the session); a session resumed after a failure gets it back
   * (resumeAfterFailedDump).
   */
  dropNetnsName?: boolean;
  /**
   * Work that needs only criu to have exited (every image but the pages is
   * written, the server's log copied), done while the page images are
   * finished: a checkpoint stores its small images meanwhile. Its failure
   * fails the dump.
   */
  whileFinishing?: (d: DumpStart) => Promise<unknown>;
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
export async function beginDump(ctx: AgentContext, id: string, kind: DumpKind): Promise<DumpStart> {
  const s = ctx.registry.get(id);
  // An init that has begun to exit (killed, its server crashed) still looks alive while its tree dies; criu would
  // spend its whole seize timeout (10 s) on it, the session frozen meanwhile, and fail with "Unseizable non-zombie".
  if (s.state !== 'running' || s.pid === null || !isRunningNow(s.pid)) {
    throw new ConflictError(`session ${id} is ${s.state === 'running' ? 'not answering (its processes are gone or exiting)' : s.state}; only a running session can be dumped`);
  }
  // Not to be held up by it, nor to dump pages it is moving.
  await ctx.hugePages.stop(id);
  // After a lazy restore, pages not yet arrived would be dumped as never touched.
  if (ctx.lazy.isArriving(id)) {
    ctx.registry.report(id, 'waiting for memory from the last restore');
    await ctx.lazy.settled(id, ctx.config.restoreTimeoutMs);
  }
  const checkpoint = newCheckpointId();
  const work = join(ctx.config.workDir, dumpDirName(kind, checkpoint));
  const netns = await netnsOf(s.pid);
  return { s: await ctx.registry.update(id, { state: 'checkpointing' }), checkpoint, work, images: join(work, 'images'), side: join(work, SIDE_FILES_DIR), netns };
}

/**
 * Removes the work directories of dumps that a dead agent left: a
 * checkpoint's (no prefix) or a stop-and-copy move's (`m-`), never
 * committed, which hold the session's memory (ARCHITECTURE invariant 4:
 * images are secrets). An agent killed inside criu dump leaves one; the
 * session itself is resumed by reconcileSessions. A post-copy source's
 * (`p-`) is left alone: its criu may still be serving the move's pages.
 * Call at the agent's start, when none of its own dumps can be running.
 */
export async function removeAbandonedDumps(workDir: string): Promise<string[]> {
  const left = (await readdir(workDir, { withFileTypes: true }).catch(() => []))
    .filter((e) => e.isDirectory() && abandonedWithItsAgent(dumpKindOf(e.name)))
    .map((e) => e.name);
  await Promise.all(left.map((n) => rm(join(workDir, n), { recursive: true, force: true })));
  return left;
}

/**
 * What every criu dump of a session is given: its images, log, hook,
 * timeout and end when the node is torn down (ctx.teardown), and its network
 * namespace left out of the images (criu's external
 * namespace) where it is known: dumping it took criu 0.03-0.065 s of every
 * dump (`ip` and `iptables-save` runs and every link's sysctls). The restore,
 * here or on a move's target, makes it again (restoreFromImages' netnsOutside).
 * A dump that leaves the tasks stopped (`use.stopped`) says so to criu too;
 * `extraArgs` follow.
 */
export function dumpArgs(ctx: AgentContext, d: DumpStart, use: HookUse = {}, extraArgs: readonly string[] = []): Omit<CriuDumpOptions, 'leaveRunning'> {
  return {
    extraArgs: [...(use.stopped ? ['--leave-stopped'] : []), ...extraArgs],
    pid: d.s.pid as number,
    externalNetnsIno: netnsLeftOut(d) ? d.netns?.ino : undefined,
    imagesDir: d.images,
    logFile: logPath(ctx, `${d.checkpoint}-dump.log`),
    // A lazy dump's post-dump does nothing of hubshift's (see hookEnv); nor does one that leaves the tasks stopped:
    // the agent copies the log and tells the capture itself once criu has exited (dumpLocally). criu runs the
    // script at every stage, twice inside the freeze.
    actionScript: actionScriptFor(ctx, !use.lazy && !use.stopped),
    env: hookEnv(ctx, d.s, { ...use, sideDir: d.side }),
    timeoutMs: ctx.config.dumpTimeoutMs,
    signal: ctx.teardown.signal,
    fileValidation: ctx.config.fileValidation,
    logLevel: ctx.config.criuLogLevel,
    ahead: ctx.waitingCriu,
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

/** The session's hot pages (hot-pages.ts), as a checkpoint's side file, if its last lazy restore here recorded them. */
async function hotPagesOf(ctx: AgentContext, s: Session): Promise<PackEntry[]> {
  const path = hotPagesPath(ctx.config.dataDir, s);
  return (await pathExists(path)) ? [{ name: HOT_PAGES_FILE, path }] : [];
}

/**
 * A dump that stops its session, done, its processes still frozen: the
 * requests it left out in the server's listen queue (criu's
 * --skip-in-flight) are reset, so that their clients learn it at once
 * (resetLeftOutConnections). Never throws: a failure is logged, and those
 * clients then wait for their next send, as before.
 */
export async function resetLeftOutRequests(ctx: AgentContext, d: DumpStart): Promise<void> {
  try {
    const reset = await resetLeftOutConnections(d.s.pid as number);
    if (reset.length) ctx.log.info({ session: d.s.id, clients: reset.map((c) => `${c.remote.address}:${c.remote.port}`) }, 'reset the requests the dump left out, unread by the server: their clients may send them again');
  } catch (err) {
    ctx.log.warn({ session: d.s.id, err: errorMessage(err) }, 'the requests the dump left out could not be reset: their clients wait until they next send');
  }
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
  const d = await beginDump(ctx, id, opts.kind);
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
  const naming: { dropped?: Promise<void> } = {};
  try {
    const { seconds } = await dump(ctx.criu, {
      ...dumpArgs(ctx, d, { captureDir: capture?.controlDir, stopped }),
      leaveRunning: opts.leaveRunning,
      // While criu dumps, not after it: criu finds the namespace by its tasks, and an `ip` run after it, on a
      // machine busy with the capture's last writes, held up 10-40 ms of checkpoints' ends.
      onStarted: opts.dropNetnsName ? () => (naming.dropped = dropNetnsName(id)) : undefined,
    });
    // criu has closed every page image: what its hook would have said at post-dump (dumpArgs).
    if (stopped) await capture?.criuDone();
    const finishing = capture ? pageImagesInUse(images).then((inUse) => capture.finish(inUse)) : hasher?.finish();
    const beside = (stopped ? copyFrozenLog(ctx, d) : Promise.resolve()).then(() => opts.whileFinishing?.(d));
    // Where criu killed the tasks, their left-out connections went with them, their resets held by the lock.
    const resetting = stopped ? resetLeftOutRequests(ctx, d) : undefined;
    // Every one settled before a failure is thrown: the rollback removes the files they use.
    const pageDigests = (await allSettledOrThrow([finishing, beside, naming.dropped, resetting]))[0];
    return { checkpoint, work, images, side, pageDigests, dumpSeconds: seconds, frozenAt, session: s, netnsOutside: netnsLeftOut(d) };
  } catch (err) {
    // Gone before the rollback looks for it, so that it puts it back.
    await naming.dropped?.catch(() => undefined);
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
    const store = ctx.store.forUser(ctx.registry.get(id).user);
    // The small images and side files, stored while the capture flushes the last pages: the commit after it took
    // 3-11 ms instead of 19-43 (256 MiB kernels, 2026-12-03). Set by whileFinishing, which every dump that returns has run.
    let early: { checkpoint: string; meta: Promise<BlobEntry> } | undefined;
    const storeMeta = async (start: DumpStart): Promise<BlobEntry> => {
      const sideFiles = [{ name: 'server.log', path: join(start.side, 'server.log') }, ...(await hotPagesOf(ctx, start.s))];
      return storeMetaBlob({ store, id: start.checkpoint, imagesDir: start.images, sideFiles, compression: ctx.config.compression });
    };
    let d: LocalDump;
    try {
      d = await dumpLocally(ctx, id, {
        leaveRunning: opts.leaveRunning,
        leaveStopped: true,
        kind: 'checkpoint',
        hashPages: ctx.config.compression === 'none',
        capturePages: true,
        dropNetnsName: !opts.leaveRunning,
        whileFinishing: (start) => (early = { checkpoint: start.checkpoint, meta: storeMeta(start) }).meta,
      });
    } catch (err) {
      if (early) await store.delete(early.checkpoint).catch(() => undefined);
      throw err;
    }
    const { checkpoint, work, images, dumpSeconds } = d;
    const metaBlob = (early as { meta: Promise<BlobEntry> }).meta;
    const s = d.session;
    progress('storing');
    const storing = performance.now();
    let manifest: CheckpointManifest;
    try {
      manifest = await writeCheckpoint({
        pageDigests: d.pageDigests,
        store,
        imagesDir: images,
        metaBlob,
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
      await store.delete(checkpoint).catch(() => undefined);
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
    await ctx.registry.update(id, opts.leaveRunning ? { state: 'running', lastCheckpoint: checkpoint } : { state: 'checkpointed', pid: null, lastCheckpoint: checkpoint });
    // After the answer, not before it (5-10 ms here): the images are links to the committed blobs, and an agent
    // stopped meanwhile removes the directory at its next start (removeAbandonedDumps).
    void rm(work, { recursive: true, force: true }).catch((err: unknown) => ctx.log.warn({ session: id, work, err: errorMessage(err) }, "a checkpoint's work directory could not be removed"));
    const seconds = (performance.now() - started) / 1000;
    // Seconds of each phase, for the log: the agent's start before criu, criu, the page capture's end after criu's
    // exit (its last writes and flush), the commit, the clean-up.
    const prepare = (d.frozenAt - started) / 1000;
    const pagesEnd = (storing - d.frozenAt) / 1000 - dumpSeconds;
    const commit = (committed - storing) / 1000;
    const cleanup = (performance.now() - committed) / 1000;
    ctx.log.info({ session: id, checkpoint, bytes: manifest.imageBytes, seconds, prepare, dumpSeconds, pagesEnd, commit, cleanup }, 'checkpoint committed');
    // Retention after the answer: older checkpoints of this session go, the new one stays.
    void expireCheckpoints(ctx.store.forUser(s.user), id, ctx.config.keepCheckpoints, (c) => c === checkpoint || ctx.reading.has(c)).then(
      (gone) => gone.length && ctx.log.info({ session: id, expired: gone }, 'older checkpoints expired'),
      (err: unknown) => ctx.log.warn({ session: id, err: errorMessage(err) }, 'expiring older checkpoints failed; they stay until the next checkpoint'),
    );
    // The next checkpoint's capture helper, started once this one has answered: left to the helper's own end
    // (500 ms after), checkpoints one after another (an evacuation) waited up to 0.1 s for its start.
    setImmediate(() => ctx.captureHelpers.warm());
    return { checkpoint, bytes: manifest.imageBytes, seconds };
  });
}
