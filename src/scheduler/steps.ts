import { UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AgentClient } from '../agent/agent-client.js';
import type { JobData, NodeRecord, Operation } from '../core/control.js';
import { StaleFenceError, UnreachableError } from '../core/errors.js';
import type { SessionView } from '../core/session.js';
import { sleep } from '../util/exec.js';
import type { NodeLanes } from './node-lanes.js';
import type { HeldLock, SessionLocks } from './session-lock.js';
import type { NodeFleet } from '../cloud/provider.js';
import type { ControlState } from './state.js';

export interface StepContext {
  state: ControlState;
  locks: SessionLocks;
  /** How many sessions leave a node at once (the node's registered figure, else the lanes' default). */
  lanes: NodeLanes;
  log: Logger;
  /** How long a step waits for an agent still busy with an earlier attempt's call. */
  busyWaitMs: number;
  /** The cloud's side of moves and releases, when nodes come from one (EC2). */
  fleet?: NodeFleet;
}

/** `bytes`: the image's size as the agent reported it (null when an earlier attempt's checkpoint was found). */
const CheckpointDone = z.object({ checkpoint: z.string(), bytes: z.number().int().nonnegative().nullable().default(null) });
/** A move that a worker reached too late for it (past its decision's startBy): the session went to the store instead. */
export const CheckpointedInstead = CheckpointDone.extend({ instead: z.string() });
export type CheckpointedInstead = z.infer<typeof CheckpointedInstead>;
const RestoreDone = z.object({ node: z.string(), checkpoint: z.string(), url: z.string(), token: z.string() });
type RestoreDone = z.infer<typeof RestoreDone>;

/** A step that cannot succeed by trying again: its operation fails now. */
function giveUp(message: string): never {
  throw new UnrecoverableError(message);
}

/** A node the operation names, and a client of its agent. */
async function nodeOf(ctx: StepContext, node: string | null): Promise<{ node: NodeRecord; agent: AgentClient }> {
  if (!node) giveUp('the operation names no node');
  const n = await ctx.state.findNode(node);
  if (!n) giveUp(`node ${node} is not registered any more`);
  return { node: n, agent: new AgentClient(n.agentUrl, n.agentToken) };
}

async function agentOf(ctx: StepContext, node: string | null): Promise<AgentClient> {
  return (await nodeOf(ctx, node)).agent;
}

/** Runs `fn` holding the session's lock; while another holder has it, the step is retried later. */
async function withLock<T>(ctx: StepContext, sessionId: string, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const lock = await ctx.locks.acquire(sessionId);
  if (!lock) throw new Error(`session ${sessionId} is locked by another worker; retrying`);
  try {
    return await fn(lock);
  } catch (err) {
    // We lost the lock to a newer holder: that one carries on, this attempt must not.
    if (err instanceof StaleFenceError) giveUp(err.message);
    throw err;
  } finally {
    await lock.release().catch(() => undefined);
  }
}

/**
 * Runs `fn` holding one of the source node's lanes (taken before the
 * session's lock, which is not held while waiting): as many as the node
 * registered, else the workers' default.
 */
async function offNode<T>(ctx: StepContext, op: Operation, source: NodeRecord, step: string, fn: () => Promise<T>): Promise<T> {
  const lane = await ctx.lanes.take(
    source.name,
    `${op.id}:${step}`,
    () => ctx.log.info({ operation: op.id, session: op.sessionId, node: source.name }, 'waiting for a lane off the node (its other sessions are leaving)'),
    source.movesAtOnce,
  );
  try {
    return await fn();
  } finally {
    await lane.release().catch(() => undefined);
  }
}

/**
 * A session an earlier attempt left mid-call on an agent (the worker died,
 * the agent carried on): waits until the agent is done with it.
 */
async function settled(ctx: StepContext, agent: AgentClient, id: string): Promise<SessionView | null> {
  const deadline = Date.now() + ctx.busyWaitMs;
  for (;;) {
    const s = await agent.findSession(id);
    if (!s || (s.state !== 'checkpointing' && s.state !== 'restoring' && s.state !== 'starting')) return s;
    if (Date.now() > deadline) throw new Error(`session ${id} is still ${s.state} on ${agent.baseUrl} after ${ctx.busyWaitMs / 1000} s`);
    await sleep(250);
  }
}

function sessionOf(op: Operation): string {
  if (!op.sessionId) giveUp(`operation ${op.id} (${op.kind}) names no session`);
  return op.sessionId;
}

/**
 * Freezes the session on its source into the store (and stops it, unless
 * the operation is a snapshot). Idempotent: a checkpoint newer than the one
 * the operation started from means an earlier attempt already made it.
 */
async function checkpointStep(ctx: StepContext, op: Operation): Promise<z.infer<typeof CheckpointDone>> {
  const done = await ctx.state.stepResult(op.id, 'checkpoint', CheckpointDone);
  if (done) return done;
  const id = sessionOf(op);
  const { node: sourceNode, agent: source } = await nodeOf(ctx, op.source);
  return offNode(ctx, op, sourceNode, 'checkpoint', () => withLock(ctx, id, async (lock) => {
    const s = await settled(ctx, source, id);
    const r = await checkpointOnSource(ctx, op, source, s, lock, op.kind === 'snapshot');
    await ctx.state.setStepResult(op.id, 'checkpoint', r);
    return r;
  }));
}

/**
 * Freezes session `s` (as its source agent has it, settled) into the store,
 * and records it: its checkpoint, and the session in the store (or still
 * running, for a snapshot). A newer checkpoint than the operation started
 * from, with the session already stopped, is an earlier attempt's.
 */
async function checkpointOnSource(ctx: StepContext, op: Operation, source: AgentClient, s: SessionView | null, lock: HeldLock, leaveRunning: boolean): Promise<z.infer<typeof CheckpointDone>> {
  const id = sessionOf(op);
  let checkpoint: string;
  let bytes: number | null = null;
  const newer = s?.lastCheckpoint && s.lastCheckpoint !== op.baseCheckpoint;
  if (s && newer && (s.state === 'checkpointed' || leaveRunning)) {
    checkpoint = s.lastCheckpoint as string;
  } else if (s?.state === 'running') {
    ({ checkpoint, bytes } = await source.checkpoint(id, leaveRunning, lock.token));
  } else {
    giveUp(`session ${id} is ${s ? s.state : 'not known'} on ${op.source}; nothing to checkpoint`);
  }
  const now = new Date();
  await ctx.state.addCheckpoint({ checkpoint, sessionId: id, node: op.source as string, at: now.toISOString(), operation: op.id, leftRunning: leaveRunning });
  // A snapshot freezes the session briefly too: it starts the cooldown (so a rebalance notice snapshots once).
  await ctx.state.updateSession(id, leaveRunning ? { lastCheckpoint: checkpoint, lastDisruptionAt: now.toISOString() } : { state: 'checkpointed', node: null, lastCheckpoint: checkpoint, lastDisruptionAt: now.toISOString() }, now);
  return { checkpoint, bytes };
}

async function restoreOn(ctx: StepContext, agent: AgentClient, node: string, id: string, checkpoint: string, lock: HeldLock): Promise<RestoreDone> {
  const t = await settled(ctx, agent, id);
  let view: SessionView;
  if (t?.state === 'running') {
    view = t;
  } else {
    view = await agent.restore(checkpoint, lock.token);
  }
  return { node, checkpoint, url: view.url, token: view.token };
}

/**
 * Brings a checkpointed session up on the target from its last checkpoint.
 * Idempotent: a session already running there was restored by an earlier
 * attempt. A failed restore leaves the checkpoint as it was, so the step is
 * simply tried again (and the session stays safe in the store if it never works).
 */
async function restoreStep(ctx: StepContext, op: Operation): Promise<RestoreDone> {
  const done = await ctx.state.stepResult(op.id, 'restore', RestoreDone);
  if (done) return done;
  const id = sessionOf(op);
  const checkpoint = op.baseCheckpoint;
  if (!checkpoint) giveUp(`session ${id} has no checkpoint to restore`);
  const target = await agentOf(ctx, op.target);
  return withLock(ctx, id, async (lock) => {
    const r = await restoreOn(ctx, target, op.target as string, id, checkpoint, lock);
    await ctx.state.setStepResult(op.id, 'restore', r);
    await ctx.state.updateSession(id, { state: 'running', node: r.node, url: r.url, token: r.token, lostWithNode: null }, new Date());
    return r;
  });
}

/** `frozenAt`: when the source froze the session (null when an earlier attempt's move was found done). */
const MoveDone = z.object({
  node: z.string(),
  url: z.string(),
  token: z.string(),
  downtimeSeconds: z.number().nullable(),
  bytes: z.number().int().nonnegative().nullable().default(null),
  frozenAt: z.string().nullable().default(null),
});
type MoveDone = z.infer<typeof MoveDone>;

/**
 * Moves a running session from its source to its target, agent to agent.
 * Idempotent: a session already running on the target was moved by an
 * earlier attempt (whose worker died while the agents carried on). A failed
 * move leaves the session running on its source (the agents see to that),
 * so the step can simply be tried again.
 */
async function moveStep(ctx: StepContext, op: Operation): Promise<MoveDone | CheckpointedInstead> {
  const done = await ctx.state.stepResult(op.id, 'move', MoveDone);
  if (done) return done;
  const instead = await ctx.state.stepResult(op.id, 'checkpoint', CheckpointedInstead);
  if (instead) return instead;
  const id = sessionOf(op);
  const { node: sourceNode, agent: source } = await nodeOf(ctx, op.source);
  const { node: targetNode, agent: target } = await nodeOf(ctx, op.target);
  return offNode(ctx, op, sourceNode, 'move', () => withLock(ctx, id, async (lock) => {
    const onTarget = async (): Promise<MoveDone | null> => {
      const t = await settled(ctx, target, id);
      return t?.state === 'running' ? { node: targetNode.name, url: t.url, token: t.token, downtimeSeconds: null, bytes: null, frozenAt: null } : null;
    };
    // Already there (an earlier attempt's move, carried on by the agents), or there once the source has settled.
    let r = await onTarget();
    const s = r ? null : await settled(ctx, source, id);
    r ??= await onTarget();
    const late = lateBy(op);
    if (!r && late !== null) {
      // An earlier attempt's checkpoint (the session already stopped) counts; a session running elsewhere does not move.
      if (s?.state !== 'running' && s?.state !== 'checkpointed') giveUp(`session ${id} is ${s ? s.state : 'not known'} on ${op.source} and not running on ${op.target}; nothing to move`);
      const c = await checkpointOnSource(ctx, op, source, s, lock, false);
      const why = `reached ${late.toFixed(1)} s after the latest start that ended in time (${op.decision.startBy}): checkpointed to the store instead of moved to ${op.target}`;
      ctx.log.warn({ operation: op.id, session: id, node: op.source, checkpoint: c.checkpoint }, why);
      const fellBack = { ...c, instead: why };
      await ctx.state.setStepResult(op.id, 'checkpoint', fellBack);
      return fellBack;
    }
    if (!r) {
      if (s?.state !== 'running') giveUp(`session ${id} is ${s ? s.state : 'not known'} on ${op.source} and not running on ${op.target}; nothing to move`);
      const m = await source.move(id, { url: targetNode.agentUrl, token: targetNode.agentToken }, 'auto', lock.token);
      r = { node: targetNode.name, url: m.url, token: s.token, downtimeSeconds: m.downtimeSeconds, bytes: m.bytes, frozenAt: m.frozenAt };
    }
    // On EC2 the session's address is a secondary private IP: it follows the session to its new node (idempotent on a retry).
    if (ctx.fleet) await ctx.fleet.moveAddress(new URL(r.url).hostname, { name: targetNode.name, instanceId: targetNode.instanceId });
    await ctx.state.setStepResult(op.id, 'move', r);
    const now = new Date();
    await ctx.state.updateSession(id, { state: 'running', node: r.node, url: r.url, token: r.token, lastDisruptionAt: now.toISOString() }, now);
    return r;
  }));
}

/** Seconds past its decision's latest start that a move is being reached, or null while it is in time (or has no deadline). */
function lateBy(op: Operation, now = Date.now()): number | null {
  const startBy = op.decision.startBy;
  if (!startBy) return null;
  const late = (now - Date.parse(startBy)) / 1000;
  return late > 0 ? late : null;
}

/**
 * Settles the operation: the source agent forgets a session it no longer
 * runs (never one that runs there), and the session's record says where it is.
 */
async function finishStep(ctx: StepContext, op: Operation): Promise<unknown> {
  const id = sessionOf(op);
  if (op.kind === 'snapshot') return ctx.state.stepResult(op.id, 'checkpoint', CheckpointDone);
  await withLock(ctx, id, async (lock) => {
    if (op.kind === 'migrate' || op.kind === 'checkpoint') {
      try {
        const source = await agentOf(ctx, op.source);
        const s = await source.findSession(id);
        if (s && s.state !== 'running') await source.removeSession(id, lock.token);
      } catch (err) {
        // A source that is gone (the spot node was taken) has nothing left to forget.
        if (!(err instanceof UnreachableError || err instanceof UnrecoverableError)) throw err;
      }
    }
  });
  if (op.kind === 'checkpoint') return ctx.state.stepResult(op.id, 'checkpoint', CheckpointDone);
  if (op.kind === 'migrate') return (await ctx.state.stepResult(op.id, 'checkpoint', CheckpointedInstead)) ?? ctx.state.stepResult(op.id, 'move', MoveDone);
  return ctx.state.stepResult(op.id, 'restore', RestoreDone);
}

/** A node a policy emptied: cordoned so nothing lands on it, then handed back to the cloud when one is configured. */
async function releaseStep(ctx: StepContext, op: Operation): Promise<unknown> {
  if (!op.source) giveUp('release names no node');
  const node = await ctx.state.findNode(op.source);
  // Forgotten: an earlier attempt released it (or the cloud took it).
  if (!node) return { node: op.source, cordoned: true, terminated: true };
  await ctx.state.setNodeState(node.name, 'cordoned');
  if (!ctx.fleet) return { node: op.source, cordoned: true, terminated: false };
  const left = (await ctx.state.listSessions()).filter((s) => s.node === node.name);
  if (left.length > 0) giveUp(`node ${node.name} still runs ${left.map((s) => s.id).join(', ')}: not terminated`);
  await ctx.fleet.release({ name: node.name, instanceId: node.instanceId });
  // Gone by our own hand: no longer listed, and no longer priced in the ledger.
  await ctx.state.forgetNode(node.name);
  return { node: op.source, cordoned: true, terminated: true };
}

export async function runStep(ctx: StepContext, data: JobData): Promise<unknown> {
  switch (data.step) {
    case 'checkpoint':
      return checkpointStep(ctx, data.op);
    case 'restore':
      return restoreStep(ctx, data.op);
    case 'move':
      return moveStep(ctx, data.op);
    case 'finish':
      return finishStep(ctx, data.op);
    case 'release':
      return releaseStep(ctx, data.op);
  }
}
