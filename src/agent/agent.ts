import { WaitingCriu } from '../criu/waiting-criu.js';
import { LandingMemory } from './landing-memory.js';
import { removeLeftCopies } from './memory-precopy.js';
import { lazyRestoreBlocker } from '../criu/transparent-huge-pages.js';
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { loadSelectedCriu } from '../criu/select.js';
import { ensurePipeMaxSize } from '../criu/pipe-size.js';
import { shrinkConntrackTable } from '../criu/conntrack-table.js';
import { ensureKdatCache } from '../criu/kdat-cache.js';
import { errorMessage } from '../core/errors.js';
import { openStore } from '../images/open-store.js';
import { PageCaptureHelpers } from '../images/page-capture.js';
import { HashingHelpers } from '../images/helper-hashing.js';
import { nativeHasherInstalled, pieceHasherPath } from '../images/native-hashing.js';
import type { AgentContext } from './agent-context.js';
import type { AgentConfig } from './config.js';
import { installCriuHook } from './criu-hook.js';
import { Fences } from './fences.js';
import { HugePageCollapses } from './huge-page-collapse.js';
import { LentAddresses } from './lent-addresses.js';
import { settleLentAddresses } from './address-holders.js';
import { LazyTransfers } from './lazy-transfers.js';
import { createAgentApp } from './http-app.js';
import { removeStaleGuards } from './page-server-guard.js';
import { ensureBridge } from './network.js';
import { SessionRegistry } from './session-registry.js';
import { reconcileSessions } from './session-service.js';
import { removeAbandonedDumps } from './dump-service.js';
import { watchOutgoingAfterRestart } from './post-copy-move.js';
import { linkToScheduler, type SchedulerLink } from './scheduler-link.js';
import { useSpawnHelper } from '../util/exec.js';
import { chunkBuffers } from '../criu/pagemap.js';
import { keepLogsFor } from './log-retention.js';
import { keepToolsResident } from './resident-tools.js';

export interface RunningAgent {
  url: string;
  ctx: AgentContext;
  /** The link to the scheduler, when one is configured. */
  scheduler: SchedulerLink | undefined;
  /** Stops serving. Sessions keep running: they outlive the agent. Safe to call twice. */
  close(): Promise<void>;
  /**
   * What a stop signal does: refuses new operations, lets those under way end
   * (up to `timeoutMs`) and answer, then closes. A checkpoint or move cut by
   * close() is settled by the next agent (the session resumes where it was);
   * drained, it completes and its caller has its answer.
   */
  drain(timeoutMs: number): Promise<void>;
}

/** How long the answers of operations that ended during a drain get to reach their callers before the connections close. */
const DRAIN_ANSWER_MS = 2_000;

export async function startAgent(config: AgentConfig, log: Logger = pino({ name: 'hubshift-agent' })): Promise<RunningAgent> {
  // First, while this process is small: its one fork (see spawn-helper.ts).
  if (config.spawnHelper) useSpawnHelper();
  const criu = await loadSelectedCriu();
  // Beside the agent's start, not before it: ldd and the helper's start took 0.15 s, and up to 0.6 s on a busy machine.
  const residentTools = config.residentTools ? keepToolsResident(criu, log) : Promise.resolve(undefined);
  if (criu.postCopy?.ok) {
    // Post-copy moves need criu's 4 MiB pipes; the sysctl is lost on reboot. Moves fall back to stop-and-copy without it.
    await ensurePipeMaxSize().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'post-copy moves will fail here'));
  }
  if (config.conntrackBuckets > 0) {
    const t = await shrinkConntrackTable(config.conntrackBuckets);
    if (t.done === 'shrunk') log.info({ before: t.before, after: t.after }, "the host's connection-tracking table shrunk: criu walks all of it twice in every dump");
    else if (t.done === 'left' && t.before > config.conntrackBuckets) log.warn({ buckets: t.before, why: t.why }, "the host's connection-tracking table left as it is: every criu dump walks it twice");
  }
  // Every criu call would otherwise probe the kernel afresh (see kdat-cache.ts); without the cache criu is only slower.
  await ensureKdatCache(criu).then(
    (state) => log.debug({ state }, 'criu kernel cache'),
    (err: unknown) => log.warn({ err: errorMessage(err) }, 'criu will probe the kernel on every call (0.03-0.04 s each)'),
  );
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await mkdir(config.workDir, { recursive: true, mode: 0o700 });
  // A post-copy move's copy ahead lives only as long as the move's request: an agent that died in one left it.
  await removeLeftCopies(config.workDir);
  // criu writes every dump's and restore's log here; a restore can be an agent's first operation.
  await mkdir(join(config.dataDir, 'logs'), { recursive: true, mode: 0o700 });
  await ensureBridge(config.bridge);
  const stopping = new AbortController();
  const registry = new SessionRegistry(config.dataDir, stopping.signal);
  await registry.load();
  const lent = new LentAddresses(config.dataDir, config.scheduler === undefined);
  await lent.load();
  const fences = new Fences(config.dataDir);
  await fences.load();
  const ctx: AgentContext = {
    config,
    registry,
    lent,
    criu,
    store: await openStore({ url: config.storeUrl, s3Endpoint: config.s3Endpoint, kmsKeyId: config.s3KmsKey, networkGbps: config.networkGbps }),
    criuHook: await installCriuHook(config.dataDir),
    log,
    lazy: new LazyTransfers(),
    hugePages: new HugePageCollapses(log),
    fences,
    incoming: new Map(),
    pushedPages: new Map(),
    captureHelpers: new PageCaptureHelpers(),
    waitingCriu: new WaitingCriu(config.waitingCriu ? criu : { argv: criu.argv }),
    hashingHelpers: new HashingHelpers(),
    residentTools,
    landing: new LandingMemory(config.landingBytes),
    reading: new Set(),
    stopping,
    teardown: new AbortController(),
  };
  const stale = await removeStaleGuards();
  if (stale > 0) log.warn({ guards: stale }, 'removed page server guards a previous agent left');
  await reconcileSessions(ctx);
  const abandoned = await removeAbandonedDumps(config.workDir);
  if (abandoned.length) log.warn({ dumps: abandoned }, 'removed the images of dumps a previous agent left uncommitted (its sessions were resumed or settled above)');
  watchOutgoingAfterRestart(ctx);
  // Addresses lent to sessions removed elsewhere while this agent was down come back now, not when the pool runs out.
  void settleLentAddresses(ctx).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'could not ask after the addresses lent to moved sessions; a start asks again when its pool runs out'));
  const app = createAgentApp(ctx);
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  // A checkpoint of a large session can take minutes: no request timeout.
  server.requestTimeout = 0;
  const addr = server.address() as AddressInfo;
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${addr.port}`;
  await warmFetch(url);
  // Restores verify with the native piece hasher where setup built it; Python helpers wait only where it did not.
  const verifier = nativeHasherInstalled() ? pieceHasherPath() : 'python';
  log.info({ url, criu: `${criu.source} ${criu.version}`, store: ctx.store.location, bridge: config.bridge, verifier }, 'agent listening');
  const thp = lazyRestoreBlocker(config.transparentHugePagesFile);
  if (thp) log.warn({ why: thp }, 'no post-copy moves or lazy restores here while this lasts: moves go stop-and-copy, restores read all memory first');
  ctx.captureHelpers.warm();
  ctx.waitingCriu.warm();
  if (verifier === 'python') ctx.hashingHelpers.warm();
  chunkBuffers.warm(2);
  const scheduler = config.scheduler ? linkToScheduler(ctx, url, config.scheduler, log) : undefined;
  const stopPruning = keepLogsFor(join(config.dataDir, 'logs'), config.logDays, log);
  let closing: Promise<void> | undefined;
  const close = (answerMs = 0): Promise<void> => {
    ctx.stopping.abort();
    ctx.captureHelpers.close();
    ctx.waitingCriu.close();
    ctx.hashingHelpers.close();
    // One still starting is closed once it has: its helper would otherwise live as long as this process.
    void ctx.residentTools.then((r) => r?.close());
    void ctx.hugePages.stopAll();
    for (const p of ctx.pushedPages.values()) p.server.kill();
    // A move in waiting for its commit: its ready announcement ends (its guard and record stay for the next agent).
    for (const m of ctx.incoming.values()) m.announcer?.cancel();
    scheduler?.stop();
    stopPruning();
    closing ??= new Promise<void>((resolve) => {
      let cut: NodeJS.Timeout | undefined;
      server.close(() => {
        clearTimeout(cut);
        resolve();
      });
      // Connections still busy (answers on their way, or requests that wait on something) are cut after `answerMs`.
      if (answerMs === 0) server.closeAllConnections();
      else {
        server.closeIdleConnections();
        cut = setTimeout(() => server.closeAllConnections(), answerMs);
      }
    });
    return closing;
  };
  return {
    url,
    ctx,
    scheduler,
    close: () => close(),
    drain: async (timeoutMs) => {
      // 0: stop as close() does, nothing let run a moment longer (a test host removed, as the cloud takes a machine).
      if (timeoutMs === 0) return close();
      ctx.stopping.abort();
      if (ctx.registry.underWay > 0) {
        log.info({ operations: ctx.registry.describeUnderWay(), timeoutSeconds: timeoutMs / 1000 }, 'stopping: letting the operations under way end first (a second signal stops at once)');
        if (!(await ctx.registry.idle(timeoutMs))) log.warn({ operations: ctx.registry.describeUnderWay() }, 'stopping with operations still under way: the next agent on this node settles them (their sessions resume here or stay checkpointed)');
      }
      await close(DRAIN_ANSWER_MS);
    },
  };
}

/**
 * Node loads fetch's HTTP client (undici and its parser) at the first call:
 * 60-70 ms here, which an agent's first restore or move in paid inside the
 * session's downtime, waiting for the restored server to answer. One request
 * to our own /healthz pays it at start instead.
 */
async function warmFetch(url: string): Promise<void> {
  await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) }).then(
    (res) => res.arrayBuffer(),
    () => undefined,
  );
}
