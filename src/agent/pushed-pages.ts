import { readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PageServerAt } from '../core/checkpoint.js';
import { ConflictError, IntegrityError, SandboxError } from '../core/errors.js';
import { startPageServer, type PageServer } from '../criu/page-server.js';
import { sleep } from '../util/exec.js';
import type { AgentContext } from './agent-context.js';
import { freePort, isOwnAddress, localAddressToward } from './network.js';
import { guardPageServer } from './page-server-guard.js';
import { tcpBytes } from '../util/tcp.js';
import { watchTransfer } from './transfer-watch.js';

/** A page server this agent opened for a stop-and-copy move in, until the move stream claims its images. */
export interface PushedPages {
  dir: string;
  log: string;
  at: PageServerAt;
  server: PageServer;
  /** Drops the pages if no move stream claims them in time. */
  timer?: NodeJS.Timeout;
}

/**
 * Opens a page server for the memory of a session about to be moved here
 * stop-and-copy: the source's `criu dump --page-server` writes it straight
 * into an image directory on this node, with no agent in the path. It
 * listens on this node's address toward the source (`peer`), for one
 * connection, and admits no other address (page-server-guard.ts). A
 * transfer that receives nothing for the move's idle timeout is ended;
 * pages no move stream claims are dropped after the commit timeout.
 */
export async function openPushedPages(ctx: AgentContext, id: string, peer: string): Promise<PageServerAt> {
  if (ctx.pushedPages.has(id) || ctx.incoming.has(id)) throw new ConflictError(`session ${id} is already being moved in`);
  const s = ctx.registry.find(id);
  if (s && s.state !== 'checkpointed' && s.state !== 'failed') throw new ConflictError(`session ${id} is already here (${s.state})`);
  // Agents sharing one network namespace (a dev setup) share the session's link names too: the source's
  // stopped copy and the restored one would collide, so such a move streams its memory instead.
  if (await isOwnAddress(peer)) throw new SandboxError(`the source (${peer}) is on this agent's own network namespace, where its stopped copy would hold the session's link names; move the memory through the agents`);
  const address = await localAddressToward(peer);
  const at = { address, port: await freePort(address) };
  const dir = join(ctx.config.workDir, `pages-${id}-${Date.now().toString(36)}`);
  const log = join(ctx.config.dataDir, 'logs', `pages-${id}-${Date.now().toString(36)}.log`);
  // Checked again: another request may have opened one while this one looked for a port.
  if (ctx.pushedPages.has(id)) throw new ConflictError(`session ${id} is already being moved in`);
  const guard = await guardPageServer(at, peer, ctx.log);
  let server: PageServer;
  try {
    server = await startPageServer(ctx.criu, { imagesDir: dir, logFile: log, at });
  } catch (err) {
    await guard.remove();
    throw err;
  }
  void server.exited.finally(() => guard.remove());
  const p: PushedPages = { dir, log, at, server };
  ctx.pushedPages.set(id, p);
  // Ends the page server when its connection has received nothing for the move's idle timeout (a dead link, a source gone).
  watchTransfer(ctx, id, server.exited, {
    what: 'a page server',
    intervalMs: 1_000,
    read: () => tcpBytes('src', at, 'bytes_received'),
    onStall: (received) => {
      ctx.log.error({ session: id, received, stalledMs: ctx.config.moveIdleTimeoutMs }, 'no page of a move in arrived for the move idle timeout; ending its page server');
      server.kill();
    },
  });
  void server.exited.then((code) => {
    ctx.log.info({ session: id, code, pageServer: at }, 'page server for a move in exited');
    if (ctx.pushedPages.get(id) !== p) return;
    p.timer = setTimeout(() => {
      ctx.log.warn({ session: id }, 'no move stream claimed the pages pushed here in time; dropping them');
      void dropPushedPages(ctx, id);
    }, ctx.config.incomingTimeoutMs);
    p.timer.unref();
  });
  return at;
}

/**
 * Moves the pages pushed for session `id` into `imagesDir`, once every one
 * has arrived (the page server exited 0 when the dump closed its
 * connection); returns their bytes. Throws when none were opened here or
 * the transfer broke.
 */
export async function claimPushedPages(ctx: AgentContext, id: string, imagesDir: string): Promise<number> {
  const p = ctx.pushedPages.get(id);
  if (!p) throw new IntegrityError(`the source pushed the memory of ${id} to a page server, but none is open for it here (it timed out, or was never asked for)`);
  clearTimeout(p.timer);
  ctx.pushedPages.delete(id);
  try {
    // The source sends the rest only after its dump has closed the connection: the exit is at most moments away.
    const code = await Promise.race([p.server.exited, sleep(ctx.config.moveIdleTimeoutMs).then(() => null)]);
    if (code !== 0) {
      p.server.kill();
      throw new IntegrityError(`the memory pushed by the source's criu did not all arrive: the page server ${code === null ? 'was still waiting' : `exited ${code}`} (log: ${p.log})`);
    }
    let bytes = 0;
    for (const name of await readdir(p.dir)) {
      bytes += (await stat(join(p.dir, name))).size;
      await rename(join(p.dir, name), join(imagesDir, name));
    }
    return bytes;
  } finally {
    await rm(p.dir, { recursive: true, force: true });
  }
}

/** Ends and forgets a page server opened for a move in (an abort, or nobody claimed it). */
export async function dropPushedPages(ctx: AgentContext, id: string): Promise<void> {
  const p = ctx.pushedPages.get(id);
  if (!p) return;
  ctx.pushedPages.delete(id);
  clearTimeout(p.timer);
  p.server.kill();
  await p.server.exited;
  await rm(p.dir, { recursive: true, force: true });
}
