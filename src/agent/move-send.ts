import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import type { BulkAt, FileDigest, MoveFile, MoveMode, PageServerAt, StreamDigest } from '../core/checkpoint.js';
import { IntegrityError, UpstreamError, errorMessage } from '../core/errors.js';
import { sleep } from '../util/exec.js';
import type { Session } from '../core/session.js';
import type { EmbeddedPages } from '../criu/pagemap.js';
import { PAGE_IMAGE, SIDE_FILES_DIR } from '../images/checkpoint-writer.js';
import { MOVE_STREAM_CLOSED, MoveStreamWriter } from '../images/move-stream.js';
import { BULK_CHANNEL_CLOSED, type BulkSender } from '../images/bulk-channel.js';
import { PIECE_BYTES } from '../images/hashing.js';
import type { z } from 'zod';
import type { AgentClient, IncomingResult } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import { rollBackDump, type DumpStart } from './dump-service.js';
import { announce, setHostVeth } from './network.js';
import { HOT_PAGES_FILE, hotPagesPath } from './hot-pages.js';

export interface MoveRequest {
  target: { url: string; token: string };
  mode: MoveMode;
  /** Post-copy: whether the eager memory goes ahead before the freeze (memory-precopy.ts); unset, the agent's setting. */
  precopy?: boolean;
  /** The scheduler's fencing token, passed on to the target. */
  fence?: number;
}

/** What a dump left to send: its image directory, side files, and the digests of pages already sent. */
export interface DumpToSend {
  images: string;
  side: string;
  session: Session;
  dumpSeconds: number;
  /** The session's network namespace was left out of the images (dumpArgs): the target makes it. */
  netnsOutside: boolean;
  /** Stop-and-copy: page images were sent (and hashed) while criu wrote them. Unset: every file is sent now. */
  pageDigests?: Map<string, FileDigest>;
  /** Post-copy: pages images sent with memory read from the frozen processes in place (embedLazyMemory). */
  embedded?: EmbeddedPages[];
}

/** Files up to this size are read whole and queued at once (criu's images besides the pages). */
const SMALL_FILE_BYTES = 1 << 20;

/** Where the memory the move stream does not carry is: served by criu here (post-copy), or pushed to the target's page server. */
export interface MemoryElsewhere {
  pageServer?: PageServerAt;
  pagesPushed?: boolean;
  /** The memory read from the frozen processes goes on the move's bulk channel, beside the stream. */
  bulk?: BulkSender;
  /** Files sent on the bulk channel before the freeze (a post-copy's pre-copied memory), for the manifest. */
  precopied?: MoveFile[];
}

/**
 * After the dump: the images criu wrote besides the pages, and the side
 * files, sent whole; then the manifest with every file's digest (the pages'
 * were taken while they were sent). Returns the bytes the move carried.
 */
export async function sendRest(ctx: AgentContext, out: MoveStreamWriter, d: DumpToSend, memory: MemoryElsewhere = {}): Promise<number> {
  // A file per task and thread, a few MB in all: read at once, then queued without a round trip each. Synchronously:
  // from the page cache, a hundred small reads take a few ms; through the thread pool they took 20-50 ms here, frozen.
  const prepare = (
    name: string,
    path: string,
    pageDigest?: FileDigest,
    embedded?: EmbeddedPages,
  ): { name: string; source: string | AsyncIterable<Buffer>; mode: number; sentAlready: boolean; bytes?: Buffer } => {
    const st = statSync(path);
    // Sent while criu wrote it (the stream summed it then); hashed on the way too, for the byte count.
    if (pageDigest && (pageDigest.bytes !== st.size || out.sent(name).bytes !== st.size)) {
      throw new IntegrityError(`${name} is ${st.size} bytes but ${out.sent(name).bytes} were sent while criu wrote it`);
    }
    const bytes = !pageDigest && !embedded && st.size <= SMALL_FILE_BYTES ? readFileSync(path) : undefined;
    return { name, source: embedded ? embedded.read() : path, mode: st.mode & 0o777, sentAlready: pageDigest !== undefined, bytes };
  };
  const prepared: ReturnType<typeof prepare>[] = [];
  for (const n of readdirSync(d.images).sort()) {
    const page = d.pageDigests !== undefined && PAGE_IMAGE.test(n);
    const digest = page ? d.pageDigests?.get(n) : undefined;
    if (page && !digest) throw new IntegrityError(`criu wrote ${n} where the move did not follow it`);
    prepared.push(prepare(`images/${n}`, join(d.images, n), digest, d.embedded?.find((e) => e.name === n)));
  }
  const log = join(d.side, 'server.log');
  if (existsSync(log)) prepared.push(prepare(`${SIDE_FILES_DIR}/server.log`, log));
  // A lazy restore on the target brings these back eagerly; post-copy sent them with the images, and its target
  // extends the record with what it faults on.
  const hot = hotPagesPath(ctx.config.dataDir, d.session);
  if (existsSync(hot)) prepared.push(prepare(`${SIDE_FILES_DIR}/${HOT_PAGES_FILE}`, hot));
  // The manifest lists the files in this order. Page images went while criu wrote them; the memory read from the
  // frozen processes goes on the bulk channel, if there is one, while the stream carries the rest: the small files
  // first, all in one write, then the larger ones.
  const files: Promise<MoveFile>[] = [];
  const bulk = memory.bulk;
  type Prepared = (typeof prepared)[number];
  const onBulk = (f: Prepared): f is Prepared & { source: AsyncIterable<Buffer> } => bulk !== undefined && typeof f.source !== 'string';
  const queued = out.queueFiles(prepared.flatMap((f) => (f.bytes && !f.sentAlready && !onBulk(f) ? [{ name: f.name, bytes: f.bytes }] : [])));
  for (const f of prepared) {
    const named = (digest: StreamDigest): MoveFile => ({ name: f.name, ...digest, mode: f.mode });
    const small = queued.get(f.name);
    if (bulk && onBulk(f)) {
      const sent = bulk.file(f.name, f.source).then(named);
      // Its failure is the Promise.all's below, not an unhandled rejection while the stream sends the rest.
      sent.catch(() => undefined);
      files.push(sent);
    }
    else files.push(Promise.resolve(named(f.sentAlready ? out.sent(f.name) : small ?? (await out.file(f.name, f.source)))));
  }
  const all = [...(memory.precopied ?? []), ...(await Promise.all(files))];
  await bulk?.end();
  await out.end({
    formatVersion: 3,
    session: { ...d.session, state: 'checkpointed', pid: null },
    criu: { version: ctx.criu.version, source: ctx.criu.source },
    kernel: release(),
    dumpSeconds: d.dumpSeconds,
    files: all,
    ...(memory.pageServer ? { pageServer: memory.pageServer } : {}),
    ...(memory.pagesPushed ? { pagesPushed: true } : {}),
    ...(d.netnsOutside ? { netnsOutside: true } : {}),
  });
  return all.reduce((a, f) => a + f.bytes, 0);
}

/** A move stream open to the target: write into `out`; `sending` is the target's answer once it has restored the session stopped. */
export interface OpenMove {
  out: MoveStreamWriter;
  sending: Promise<z.infer<typeof IncomingResult>>;
  /** Closes the stream after a failed dump and waits for the request to end. */
  cancel(why: string): Promise<void>;
}

/**
 * Opens the move first: the target refuses at the header what it would
 * refuse anyway, and a request that fails closes the stream, so nothing
 * waits on it.
 */
export function openMoveStream(ctx: AgentContext, id: string, target: AgentClient, fence: number | undefined, bulk?: BulkAt): OpenMove {
  const { body, answer: sending } = target.openMove(fence, ctx.config.moveIdleTimeoutMs);
  const out = new MoveStreamWriter(body, { session: { ...ctx.registry.get(id), state: 'checkpointed', pid: null }, pieceBytes: PIECE_BYTES, ...(bulk ? { bulk } : {}) });
  sending.catch((err: unknown) => out.abort(err instanceof Error ? err : new Error(errorMessage(err))));
  return {
    out,
    sending,
    cancel: async (why) => {
      out.abort(new Error(why));
      await sending.catch(() => undefined);
    },
  };
}

/** Seconds of a move's phases after the dump, for the source's log. */
export interface HandOverLaps {
  /** The other images and the manifest sent. */
  rest: number;
  /** Until the target answered (verified and restored). */
  send: number;
  verify: number;
  restore: number;
  commit: number;
}

/** ok: the bytes the stream carried (`total`) and those the target received from criu besides (`pushed`). */
export type HandOver = { ok: true; total: number; pushed: number; lap: HandOverLaps } | { ok: false; phase: string; cause: unknown };

/**
 * The move's end, both modes: the rest of the images and the manifest sent,
 * the target's restore awaited, the commit sent. Just before the commit the
 * session's address is recorded as lent to the target (lent-addresses.ts):
 * an agent that dies between the commit and letting go still keeps it from
 * its next start, and a move that fails after it resumes the session here,
 * where its own record holds the address. A failure closes the stream
 * and says in which phase, with the target's own answer as the cause when
 * the stream closed under us.
 */
export async function handOver(
  ctx: AgentContext,
  m: OpenMove,
  target: AgentClient,
  req: Pick<MoveRequest, 'target' | 'fence'>,
  d: DumpToSend,
  opts: MemoryElsewhere & { failedWhileDumping?: unknown; beforeCommit?: () => Promise<void>; whileTargetRestores?: { phase: string; run: () => Promise<void> } } = {},
): Promise<HandOver> {
  const lap: HandOverLaps = { rest: 0, send: 0, verify: 0, restore: 0, commit: 0 };
  let phase = 'sending the images';
  let alongside: Promise<{ err: unknown } | null> | undefined;
  try {
    // Stop-and-copy: sending the pages may have failed while criu wrote them.
    if (opts.failedWhileDumping !== undefined) throw opts.failedWhileDumping;
    const t0 = performance.now();
    const total = await sendRest(ctx, m.out, d, opts);
    lap.rest = (performance.now() - t0) / 1000;
    // Work that must be done before the commit but not before the target has it all: beside its restore.
    alongside = opts.whileTargetRestores?.run().then(
      () => null,
      (err: unknown) => ({ err }),
    );
    const received = await m.sending;
    lap.send = (performance.now() - t0) / 1000;
    lap.verify = received.verifySeconds;
    lap.restore = received.restoreSeconds;
    const failed = await alongside;
    if (failed && opts.whileTargetRestores) {
      phase = opts.whileTargetRestores.phase;
      throw failed.err;
    }
    phase = 'committing';
    await opts.beforeCommit?.();
    await ctx.lent.lend(d.session.id, d.session.network.ip, req.target);
    const t1 = performance.now();
    // Past the target's commit timeout its guard has killed an uncommitted copy: waiting longer tells nothing.
    await target.commitMove(d.session.id, req.fence, ctx.config.incomingTimeoutMs);
    lap.commit = (performance.now() - t1) / 1000;
    return { ok: true, total, pushed: received.pushedBytes ?? 0, lap };
  } catch (err) {
    m.out.abort(new Error(`the move failed while ${phase}`));
    // Settled before the caller rolls back (a link taken down after the rollback brought it up would stay down).
    await alongside;
    // Either connection closed under us: the target closed it, and its answer says why.
    const closedUnderUs = err instanceof Error && (err.message === MOVE_STREAM_CLOSED || err.message === BULK_CHANNEL_CLOSED);
    const cause = closedUnderUs ? await m.sending.then(() => err, (e: unknown) => e) : err;
    return { ok: false, phase, cause };
  }
}

/** How long one question to a move's target may take: a target silent for longer is asked again, or given up. */
export function askTargetMs(ctx: AgentContext): number {
  return Math.min(5_000, Math.max(1_000, ctx.config.incomingTimeoutMs / 2));
}

/**
 * A stop-and-copy move failed before the target confirmed its commit: makes
 * sure the target has no copy before the source resumes its own. The target
 * is asked to abort until it answers or its commit timeout (after which its
 * guard has killed an uncommitted copy) has passed: a commit whose answer
 * was lost shows as a 409 (the session runs there), and `letGo` drops the
 * copy here and the move counts as done. A target silent for the whole time
 * is taken to have no copy: it could still run one only if the commit reached
 * it and it has been cut off from this agent ever since.
 */
export async function clearTargetCopy(ctx: AgentContext, target: AgentClient, id: string, cause: unknown, letGo: () => Promise<void>): Promise<void> {
  const deadline = performance.now() + ctx.config.incomingTimeoutMs + 2_000;
  let asks = 0;
  for (;;) {
    asks++;
    try {
      await target.abortMove(id, askTargetMs(ctx));
      return;
    } catch (err) {
      if (err instanceof UpstreamError && err.status === 409) {
        await letGo();
        throw new UpstreamError(`the move of ${id} to ${target.baseUrl} was committed there, but this agent did not hear it in time (${errorMessage(cause)}); the session runs on the target, ask it`, 409, 'moved');
      }
      if (performance.now() >= deadline) {
        ctx.log.error({ session: id, target: target.baseUrl, asks, err: errorMessage(err) }, 'the target did not answer an abort within its commit timeout; its uncommitted copy is gone, so the session resumes here');
        return;
      }
    }
    await sleep(Math.min(1_000, Math.max(0, deadline - performance.now())));
  }
}

/** The frozen (or stopped) copy here runs again: whatever criu left removed, its link up, its address announced. */
export async function resumeHere(ctx: AgentContext, d: DumpStart, linkDown: boolean, error: string | null): Promise<void> {
  // After the commit this agent had let go of it; the reason goes with the record before it shows as running.
  if (!ctx.registry.find(d.s.id)) await ctx.registry.put({ ...d.s, state: 'checkpointing', error });
  else if (error) await ctx.registry.update(d.s.id, { error });
  await rollBackDump(ctx, d, new Error(error ?? 'the move failed'));
  const s = ctx.registry.get(d.s.id);
  if (s.state !== 'running' || s.pid === null) return;
  // Its namespace has its name again (resumeAfterFailedDump), here or, on test hosts, which share /run/netns, the target's copy's.
  if (linkDown) await setHostVeth(s.network, 'up');
  await announce(s.pid, s.network.gateway);
}
