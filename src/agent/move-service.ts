import { readdir, rm, stat } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import type { FileDigest, MoveFile, MoveMode, MoveResult } from '../core/checkpoint.js';
import { InputError, IntegrityError, UpstreamError, errorMessage } from '../core/errors.js';
import { sessionUrl } from '../core/session.js';
import { PAGE_IMAGE, SIDE_FILES_DIR } from '../images/checkpoint-writer.js';
import { PIECE_BYTES } from '../images/hashing.js';
import { MOVE_STREAM_CLOSED, MoveStreamWriter } from '../images/move-stream.js';
import { sleep } from '../util/exec.js';
import { pathExists } from '../util/fs.js';
import { AgentClient } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import { dumpLocally, restoreFromImages, type LocalDump } from './checkpoint-service.js';
import { forgetSession } from './session-service.js';

export interface MoveRequest {
  target: { url: string; token: string };
  mode: MoveMode;
  /** The scheduler's fencing token, passed on to the target. */
  fence?: number;
}

/** Why post-copy is refused here: the setup probe's finding (see README, "Moving sessions"). */
export function postCopyBlocker(criu: AgentContext['criu']): string {
  if (!criu.postCopy) return 'post-copy between agents is not available: it has not been probed with this criu (run npm run setup)';
  if (!criu.postCopy.ok) return `post-copy between agents is not available on this machine (criu ${criu.version}, kernel ${criu.kernel}): ${criu.postCopy.reason}`;
  return `post-copy between agents is not available yet: criu ${criu.version} passed the lazy-migration probe on this kernel, but hubshift does not move sessions that way yet`;
}

/**
 * After the dump: the images criu wrote besides the pages, and the side
 * files, sent whole; then the manifest with every file's digest (the pages'
 * were taken while they were sent). Returns the bytes the move carried.
 */
async function sendRest(ctx: AgentContext, out: MoveStreamWriter, d: LocalDump): Promise<number> {
  const files: MoveFile[] = [];
  const add = async (name: string, path: string, pageDigest?: FileDigest): Promise<void> => {
    const st = await stat(path);
    if (pageDigest) {
      if (pageDigest.bytes !== st.size) throw new IntegrityError(`${name} is ${st.size} bytes but ${pageDigest.bytes} were sent while criu wrote it`);
      files.push({ name, ...pageDigest, mode: st.mode & 0o777 });
      return;
    }
    files.push({ name, ...(await out.file(name, path)), mode: st.mode & 0o777 });
  };
  for (const n of (await readdir(d.images)).sort()) {
    const page = PAGE_IMAGE.test(n);
    const digest = page ? d.pageDigests?.get(n) : undefined;
    if (page && !digest) throw new IntegrityError(`criu wrote ${n} where the move did not follow it`);
    await add(`images/${n}`, join(d.images, n), digest);
  }
  const log = join(d.side, 'server.log');
  if (await pathExists(log)) await add(`${SIDE_FILES_DIR}/server.log`, log);
  await out.end({
    formatVersion: 2,
    session: { ...d.session, state: 'checkpointed', pid: null },
    criu: { version: ctx.criu.version, source: ctx.criu.source },
    kernel: release(),
    dumpSeconds: d.dumpSeconds,
    files,
  });
  return files.reduce((a, f) => a + f.bytes, 0);
}

/**
 * Moves a running session to another agent, stop-and-copy: the target is
 * sent the page images while criu dumps them here (a local copy stays for a
 * rollback), then the rest and the manifest; it verifies all of it, restores
 * the session stopped, and the commit lets it run there while this agent
 * forgets it. Any failure before the commit resumes it here, once the target
 * has confirmed its copy is gone (or could not have outlived its commit
 * timeout).
 */
export async function moveSession(ctx: AgentContext, id: string, req: MoveRequest): Promise<MoveResult> {
  if (req.mode === 'post-copy') throw new InputError(postCopyBlocker(ctx.criu));
  const mode = 'stop-and-copy' as const;
  const progress = (step: string, done?: number, total?: number): void => ctx.registry.report(id, step, done, total);
  const target = new AgentClient(req.target.url, req.target.token);
  const started = performance.now();
  return ctx.registry.exclusive(id, 'move', async () => {
    // The target refuses at the header what it would refuse anyway; a
    // request that fails closes the stream, so nothing waits on it.
    const { body, answer: sending } = target.openMove(req.fence, ctx.config.moveIdleTimeoutMs);
    const out = new MoveStreamWriter(body, { session: { ...ctx.registry.get(id), state: 'checkpointed', pid: null }, pieceBytes: PIECE_BYTES });
    sending.catch((err: unknown) => out.abort(err instanceof Error ? err : new Error(errorMessage(err))));
    let sendError: unknown;
    // Resolves when the chunk is on its way (its buffer free again); never rejects.
    const pageSink = async (name: string, chunk: Buffer): Promise<void> => {
      if (sendError !== undefined) return;
      await out.data(`images/${name}`, chunk).catch((err: unknown) => {
        sendError ??= err;
      });
    };
    let d: LocalDump;
    try {
      d = await dumpLocally(ctx, id, { leaveRunning: false, prefix: 'm-', hashPages: true, volatile: true, pageSink });
    } catch (err) {
      out.abort(new Error(`the dump failed: ${errorMessage(err)}`));
      await sending.catch(() => undefined);
      throw err;
    }
    const { frozenAt } = d;
    progress('sending');
    let phase = 'sending the images';
    // tail: from criu's exit to the last page sent (the dump returns then).
    // rest: the other images and the manifest sent; send: until the target answered.
    const lap = { tail: (performance.now() - frozenAt) / 1000 - d.dumpSeconds, rest: 0, send: 0, verify: 0, restore: 0, commit: 0 };
    let total = 0;
    try {
      const t0 = performance.now();
      if (sendError !== undefined) throw sendError;
      total = await sendRest(ctx, out, d);
      lap.rest = (performance.now() - t0) / 1000;
      const received = await sending;
      lap.send = (performance.now() - t0) / 1000;
      lap.verify = received.verifySeconds;
      lap.restore = received.restoreSeconds;
      phase = 'committing';
      const t1 = performance.now();
      await target.commitMove(id, req.fence);
      lap.commit = (performance.now() - t1) / 1000;
    } catch (err) {
      out.abort(new Error(`the move failed while ${phase}`));
      // When the stream closed under us, the target's answer says why.
      const cause = err instanceof Error && err.message === MOVE_STREAM_CLOSED ? await sending.then(() => err, (e: unknown) => e) : err;
      return rollBack(ctx, d, target, phase, cause);
    }
    // The target runs it: this agent lets go of its copy (criu already ended the processes).
    await forgetSession(ctx, id);
    await rm(d.work, { recursive: true, force: true });
    const seconds = (performance.now() - started) / 1000;
    const downtimeSeconds = (performance.now() - frozenAt) / 1000;
    ctx.log.info({ session: id, target: req.target.url, bytes: total, seconds, downtimeSeconds, dumpSeconds: d.dumpSeconds, ...lap }, 'session moved');
    return { id, url: sessionUrl(d.session), mode, downtimeSeconds, seconds, bytes: total, target: req.target.url };
  });
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
  let abortConfirmed = false;
  try {
    await target.abortMove(id);
    abortConfirmed = true;
  } catch (err) {
    if (err instanceof UpstreamError && err.status === 409) {
      // The commit went through; only its answer was lost. This agent lets go, as after a move.
      await forgetSession(ctx, id);
      await rm(d.work, { recursive: true, force: true });
      throw new UpstreamError(`the move of ${id} to ${target.baseUrl} was committed there, but this agent did not hear it in time (${errorMessage(cause)}); the session runs on the target, ask it`, 409, 'moved');
    }
  }
  if (!abortConfirmed) {
    // The target cannot be asked: its uncommitted copy kills itself after its timeout. Wait that out.
    await sleep(ctx.config.incomingTimeoutMs + 2_000);
  }
  try {
    await restoreFromImages(ctx, { ...d.session, state: 'restoring', pid: null }, d.images, `${d.checkpoint}-back`, { lazy: false });
  } catch (err) {
    await ctx.registry.update(id, { state: 'failed', pid: null, error: `move to ${target.baseUrl} failed (${errorMessage(cause)}) and resuming here failed too (${errorMessage(err)}); images kept in ${d.images}` });
    throw err;
  }
  await rm(d.work, { recursive: true, force: true });
  throw new UpstreamError(`moving ${id} to ${target.baseUrl} failed while ${phase}: ${errorMessage(cause)}; the session runs here again`, cause instanceof UpstreamError ? cause.status : 502, 'move_failed');
}
