import { readFile, rm } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { InputError, SandboxError, describeZodIssue, errorMessage, newSessionId, newToken } from '../core/index.js';
import { HUB_TOKEN_ENV, SessionSpec, isHubSession, sessionUrl, type Session } from '../core/session.js';
import { hasLockRules, removeLockRules } from '../criu/network-lock.js';
import { releaseTcpRepair } from '../criu/tcp-repair.js';
import { waitFor } from '../util/exec.js';
import { pathExists } from '../util/fs.js';
import { isAlive, killQuietly, processTree, tracerPid } from '../util/proc.js';
import type { AgentContext } from './agent-context.js';
import { abandonedWithItsAgent, dumpKindOf } from './dump-dirs.js';
import { killOutgoing } from './outgoing-moves.js';
import { killIncomingCopies } from './incoming-copies.js';
import { settleIncoming } from './incoming-service.js';
import { settleLentAddresses } from './address-holders.js';
import { findStoppedCopy, forgetStoppedCopy, killStoppedCopies } from './stopped-copies.js';
import { JupyterRest } from './jupyter-rest.js';
import { allocateAddress, announce, attachSessionNetns, createSessionNetwork, dropMovedNetns, hostVethName, macFor, netnsOf, netnsPath, parseSubnet, removeSessionNetwork, type NetnsId } from './network.js';
import { homeDir, killSession, launchSession, prepareSessionFiles, sessionCommand, sessionEnv, sessionPaths } from './sandbox.js';

/** Waits until a session's Jupyter server answers its status API. */
export async function waitForServer(ctx: AgentContext, s: Session): Promise<void> {
  const rest = new JupyterRest(sessionUrl(s), s.token, 2_000);
  await waitFor(`session ${s.id}'s Jupyter server to answer at ${sessionUrl(s)}`, async () => {
    if (s.pid !== null && !(await isAlive(s.pid))) {
      throw new SandboxError(`session ${s.id}'s server exited; see ${sessionPaths(ctx.config.dataDir, s).log}`);
    }
    return rest.status().then(() => true, () => undefined);
  }, { timeoutMs: ctx.config.startTimeoutMs, intervalMs: 25 });
}

/**
 * Addresses held by sessions this agent knows, running or checkpointed (a
 * restore keeps its address), by sessions moved from here (still held
 * where they went), and by those the caller names.
 */
function takenAddresses(ctx: AgentContext, avoid: readonly string[]): Set<string> {
  return new Set([...ctx.registry.list().map((s) => s.network.ip), ...ctx.lent.addresses(), ...(starting.get(ctx) ?? []), ...avoid]);
}

// Addresses given to starts not yet in the registry: two starts that waited on other agents may pick in one tick.
const starting = new WeakMap<AgentContext, Set<string>>();

function reserve(ctx: AgentContext, ip: string): string {
  const mine = starting.get(ctx) ?? new Set<string>();
  starting.set(ctx, mine.add(ip));
  return ip;
}

/**
 * The lowest free address of this agent's pool. Addresses lent to moved
 * sessions are asked after only when the pool has none left, so that a
 * start does not wait on other agents.
 */
async function freeAddress(ctx: AgentContext, avoid: readonly string[]): Promise<string> {
  const { subnet, pool } = ctx.config.bridge;
  try {
    return reserve(ctx, allocateAddress(subnet, takenAddresses(ctx, avoid), pool));
  } catch (err) {
    if (!(err instanceof SandboxError) || ctx.lent.list().length === 0) throw err;
  }
  await settleLentAddresses(ctx);
  try {
    return reserve(ctx, allocateAddress(subnet, takenAddresses(ctx, avoid), pool));
  } catch (err) {
    const lent = ctx.lent.list();
    if (!(err instanceof SandboxError) || lent.length === 0) throw err;
    const some = lent.slice(0, 3).map((r) => `${r.ip} (session ${r.sessionId}, on ${r.target})`).join(', ');
    throw new SandboxError(`${err.message}; ${lent.length} of its addresses belong to sessions moved from here that still run elsewhere: ${some}${lent.length > 3 ? ', ...' : ''} (remove or move back those sessions to free them)`);
  }
}

export async function startSession(ctx: AgentContext, input: unknown): Promise<Session> {
  const parsed = SessionSpec.safeParse(input);
  if (!parsed.success) throw new InputError(`invalid session request at ${describeZodIssue(parsed.error, '(body)')}`);
  const spec = parsed.data;
  const id = newSessionId();
  // Refused before its record is written: a stopping agent's next one would find it half-started.
  ctx.registry.refuseWhenStopping('start', id);
  const { gateway, prefixLength } = parseSubnet(ctx.config.bridge.subnet);
  const now = new Date().toISOString();
  const ip = await freeAddress(ctx, spec.avoidAddresses);
  let s: Session;
  try {
    s = await ctx.registry.put({
      id,
      user: spec.user,
      state: 'starting',
      network: { ip, prefixLength, gateway, mac: macFor(id), hostVeth: hostVethName(id), port: ctx.config.sessionPort },
      // A hub session's server accepts the hub's tokens only; its own lets the agent in.
      token: spec.env[HUB_TOKEN_ENV] ?? newToken(),
      pid: null,
      home: homeDir(ctx.config.dataDir, spec.user),
      filesDir: sessionPaths(ctx.config.dataDir, { id }).dir,
      env: spec.env,
      createdAt: now,
      updatedAt: now,
      lastCheckpoint: null,
      error: null,
    });
  } finally {
    starting.get(ctx)?.delete(ip);
  }
  return ctx.registry.exclusive(id, 'start', async () => {
    try {
      const paths = sessionPaths(ctx.config.dataDir, s);
      await prepareSessionFiles(paths, s.home);
      await createSessionNetwork(id, s.network, ctx.config.bridge);
      const pid = await launchSession(sessionCommand(isHubSession(s) ? ctx.config.hubSessionCommand : ctx.config.sessionCommand, s), sessionEnv(s, paths, { hugePages: ctx.config.sessionHugePages }), s.home, id);
      s = await ctx.registry.update(id, { pid });
      // Its address may have been another session's a moment ago: neighbours learn the new MAC from this (this node
      // forgot the old one when it made the network).
      await announce(pid, s.network.gateway);
      await waitForServer(ctx, s);
      s = await ctx.registry.update(id, { state: 'running' });
      ctx.log.info({ session: id, user: s.user, pid, ip: s.network.ip }, 'session started');
      return s;
    } catch (err) {
      if (s.pid !== null) await killSession(s.pid);
      await removeSessionNetwork(id, s.network).catch(() => undefined);
      await ctx.registry.update(id, { state: 'failed', pid: null, error: errorMessage(err) });
      throw err;
    }
  });
}

/**
 * Stops every session this agent knows and removes their networks, keeping
 * their records: for a test or the demo tearing down what it started.
 * Records are read again first, in case another agent changed them.
 */
export async function stopEverySession(ctx: AgentContext): Promise<void> {
  ctx.stopping.abort();
  ctx.teardown.abort(new Error('the node is being torn down'));
  await ctx.hugePages.stopAll();
  // Post-copy moves still serving memory to their targets: their frozen copies too.
  await killOutgoing(ctx.config.dataDir);
  await killStoppedCopies(ctx.config.dataDir);
  await killIncomingCopies(ctx.config.dataDir);
  for (const p of ctx.pushedPages.values()) p.server.kill();
  await ctx.registry.load();
  for (const s of ctx.registry.list()) {
    if (s.pid !== null) await killSession(s.pid);
    await removeSessionNetwork(s.id, s.network).catch(() => undefined);
  }
}

/** Stops a session and forgets it. Its checkpoints stay in the store. */
export async function removeSession(ctx: AgentContext, id: string): Promise<void> {
  const s = ctx.registry.get(id);
  await ctx.registry.exclusive(id, 'remove', async () => {
    await ctx.hugePages.stop(id);
    // A post-copy move's source ends its frozen copy only once every page is here; killed earlier, it would run again there.
    if (ctx.lazy.isArriving(id)) await ctx.lazy.settled(id, ctx.config.restoreTimeoutMs);
    if (s.pid !== null) await killSession(s.pid);
    // A checkpointed session's network went with its commit; the same names
    // may now belong to the session restored elsewhere on this machine.
    if (s.state !== 'checkpointed') await removeSessionNetwork(id, s.network);
    await forgetSession(ctx, id);
    ctx.log.info({ session: id }, 'session removed');
  });
}

/**
 * Drops this agent's record of a session whose processes are gone. Its files
 * go too, unless it runs on this machine under another agent (test hosts
 * share one filesystem): then they are that session's now.
 */
export async function forgetSession(ctx: AgentContext, id: string): Promise<void> {
  const s = ctx.registry.get(id);
  await ctx.registry.remove(id);
  await dropSessionFiles(ctx, s);
}

/**
 * A stop-and-copy move's stopped copy, once the session runs on the target:
 * killed, its namespace's name dropped if it still names the namespace it
 * had here (`netns`), forgotten with its record.
 */
export async function endStoppedCopy(ctx: AgentContext, s: Session, netns: NetnsId | null): Promise<void> {
  if (s.pid !== null) await killSession(s.pid);
  await dropMovedNetns(s.id, netns);
  await forgetSession(ctx, s.id);
  await forgetStoppedCopy(ctx.config.dataDir, s.id);
}

/** A session's files on this node, unless it runs on this machine under another agent (see forgetSession). */
export async function dropSessionFiles(ctx: AgentContext, s: Session): Promise<void> {
  if (!(await pathExists(netnsPath(s.id)))) await rm(sessionPaths(ctx.config.dataDir, s).dir, { recursive: true, force: true });
}

/**
 * Makes a session that a failed dump left behind whole again: its TCP
 * sockets out of repair mode, CRIU's lock rules out of its namespace, and
 * every one of its tasks resumed, its namespace named again. Each step is a
 * no-op when criu already cleaned up after itself.
 */
export async function resumeAfterFailedDump(ctx: AgentContext, s: Session): Promise<boolean> {
  if (s.pid === null || !(await isAlive(s.pid))) return false;
  const tree = await processTree(s.pid);
  const released = await releaseTcpRepair(tree);
  if (released > 0) ctx.log.warn({ session: s.id, sockets: released }, 'released TCP sockets a failed dump left in repair mode');
  const ns = `/proc/${s.pid}/ns/net`;
  if (await hasLockRules(ns)) {
    await removeLockRules(ns);
    ctx.log.warn({ session: s.id }, 'removed CRIU network-lock rules left by a failed dump');
  }
  for (const pid of tree) killQuietly(pid, 'SIGCONT');
  // A checkpoint drops the name while criu dumps (dumpLocally); the session's later operations find its namespace by it.
  if (!(await pathExists(netnsPath(s.id)))) await attachSessionNetns(s.id, s.pid);
  return true;
}

/**
 * Ends the criu dump of a checkpoint, or of a stop-and-copy move, that
 * still holds session `s` after its agent died inside it: criu outlived a
 * killed agent by up to a second here, and a session resumed meanwhile
 * would be left stopped when criu finished (`--leave-stopped`). The dump is
 * found by pid, the tracer the kernel names for the session's init, and
 * only if its command is a dump into such a work directory of this agent.
 * A stop-and-copy move commits only after its dump, so the target has no
 * copy to run yet (its guard drops the uncommitted one); a post-copy
 * source's lazy dump is left to watchOutgoingAfterRestart, as the target
 * may run the session already. The rollback that follows is the one for a
 * criu killed mid-dump.
 */
async function endLeftDump(ctx: AgentContext, s: Session): Promise<void> {
  if (s.pid === null) return;
  const status = await readFile(`/proc/${s.pid}/status`, 'utf8').catch(() => '');
  const tracer = tracerPid(status);
  if (!tracer) return;
  const argv = (await readFile(`/proc/${tracer}/cmdline`, 'utf8').catch(() => '')).split('\0');
  const images = argv.includes('dump') ? argv[argv.indexOf('-D') + 1] : undefined;
  const kind = images && dirname(dirname(images)) === ctx.config.workDir ? dumpKindOf(basename(dirname(images))) : null;
  if (!abandonedWithItsAgent(kind)) return;
  ctx.log.warn({ session: s.id, criuPid: tracer, images, kind }, 'a criu dump outlived the agent that started it; ending it before the session resumes');
  killQuietly(tracer, 'SIGKILL');
  await waitFor(`criu (pid ${tracer}) to end`, async () => ((await isAlive(tracer)) ? undefined : true), { timeoutMs: 10_000, intervalMs: 50 });
}

/**
 * After an agent restart: sessions whose processes are gone are marked so,
 * operations that were cut off are settled (a dump rolled back, a restore
 * that never answered counted as not done).
 */
export async function reconcileSessions(ctx: AgentContext): Promise<void> {
  // Moves in first: a copy that runs here after all must not be counted as a dead restore below.
  await settleIncoming(ctx);
  for (const s of ctx.registry.list()) {
    const alive = s.pid !== null && (await isAlive(s.pid));
    const stopped = s.state === 'checkpointing' ? await findStoppedCopy(ctx.config.dataDir, s.id) : null;
    if (stopped?.committing) {
      // A stop-and-copy move's commit was on its way: the session runs on the target, or waits in its store.
      ctx.log.warn({ session: s.id, target: stopped.target }, 'the agent stopped while a move of this session was being committed; its stopped copy here is killed (the target runs it, or keeps it in its store)');
      // Its pid only while it is alive: a dead one may have been taken by another process.
      await endStoppedCopy(ctx, alive ? s : { ...s, pid: null }, alive && s.pid !== null ? await netnsOf(s.pid) : null);
      continue;
    }
    // Not yet committing: the copy here is the session, and is resumed below.
    if (stopped) await forgetStoppedCopy(ctx.config.dataDir, s.id);
    if (s.state === 'checkpointing' || s.state === 'restoring' || s.state === 'starting') {
      if (alive && s.state === 'checkpointing') await endLeftDump(ctx, s);
      if (alive && (await resumeAfterFailedDump(ctx, s))) {
        await ctx.registry.update(s.id, { state: 'running' });
      } else if (s.lastCheckpoint) {
        await removeSessionNetwork(s.id, s.network).catch(() => undefined);
        await ctx.registry.update(s.id, { state: 'checkpointed', pid: null });
      } else {
        await ctx.registry.update(s.id, { state: 'failed', pid: null, error: `the agent stopped during ${s.state} and the session's processes are gone` });
      }
    } else if (s.state === 'running' && !alive) {
      await ctx.registry.update(s.id, { state: 'failed', pid: null, error: `the session's processes exited (see ${sessionPaths(ctx.config.dataDir, s).log})` });
    }
  }
}

