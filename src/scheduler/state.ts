import { z } from 'zod';
import {
  ActionRecord,
  CheckpointRecord,
  type ClusterSnapshot,
  InFlightOperation,
  NodeRecord,
  type NodeRegistration,
  NoticeInfo,
  Operation,
  type MetricsPush,
  SessionRecord,
  type SessionReport,
  type SessionSnapshot,
  routePrefixes,
  UsageSample,
} from '../core/index.js';
import { NotFoundError } from '../core/errors.js';
import { typesFromNodes } from '../pricing/instance-types.js';
import { keys } from './keys.js';
import { STATE_DEFAULTS, type StateOptions } from './defaults.js';
import type { RedisConnection } from './redis.js';

/** What a session's start gave it, stored beside its record (see putSession). */
const SessionOrigin = SessionRecord.pick({ hub: true, group: true, requestedBytes: true });

function parseJson<T>(schema: z.ZodType<T>, text: string | null | undefined, what: string): T | null {
  if (text === null || text === undefined) return null;
  const r = schema.safeParse(JSON.parse(text));
  if (!r.success) throw new Error(`Redis holds a malformed ${what}: ${r.error.issues[0]?.path.join('.')} ${r.error.issues[0]?.message} (written by another hubshift version?)`);
  return r.data;
}

// Sets the claim only if none is held and the session is still where the
// decision saw it: a scheduler acting on an older snapshot cannot re-apply
// a move another one already made.
const CLAIM = `
local held = redis.call('GET', KEYS[1])
if held then return {'held', held} end
if ARGV[3] ~= '' then
  local node = redis.call('HGET', KEYS[2], 'node')
  if node ~= ARGV[3] then return {'moved', node or ''} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'ok', ARGV[1]}
`;

const RELEASE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export type ClaimResult = { ok: true } | { ok: false; why: 'held' | 'moved'; detail: string };

/**
 * The control plane's state in Redis: nodes, sessions with their recent
 * samples, notices, operations in flight, the action log. Every value read
 * back is parsed: Redis is an edge like any other.
 */
/** How long a removed session's id is remembered, so late pushes do not bring it back. */
const REMOVED_MEMORY_SECONDS = 3600;

/** A node the cloud took, and what became of the sessions still recorded on it. */
export interface TakenNode {
  node: string;
  /** Sessions with no checkpoint to go back to, failed already, or on a hibernated node: marked failed. */
  failed: string[];
  /** Sessions back at their last checkpoint: what they did since it is lost. */
  backToCheckpoint: { id: string; checkpoint: string }[];
}

export class ControlState {
  readonly options: StateOptions;
  constructor(
    readonly redis: RedisConnection,
    options: Partial<StateOptions> = {},
  ) {
    this.options = { ...STATE_DEFAULTS, ...options };
  }

  // ---- nodes

  async registerNode(reg: NodeRegistration, now: Date): Promise<NodeRecord> {
    const before = await this.findNode(reg.name);
    const rec: NodeRecord = {
      ...reg,
      // A cordon (the node is being emptied) outlives a re-registration.
      state: before?.state ?? 'ready',
      registeredAt: before?.registeredAt ?? now.toISOString(),
      lastSeenAt: now.toISOString(),
    };
    await Promise.all([
      this.redis.set(keys.node(reg.name), JSON.stringify(rec)),
      this.redis.sadd(keys.nodes, reg.name),
      this.redis.hset(keys.instances, reg.instanceId, reg.name),
    ]);
    return rec;
  }

  async findNode(name: string): Promise<NodeRecord | null> {
    return parseJson(NodeRecord, await this.redis.get(keys.node(name)), `node ${name}`);
  }

  async getNode(name: string): Promise<NodeRecord> {
    const n = await this.findNode(name);
    if (!n) throw new NotFoundError(`no node ${name} is registered (hubshift agent --node ${name} --scheduler URL registers it)`);
    return n;
  }

  async listNodes(): Promise<NodeRecord[]> {
    const names = (await this.redis.smembers(keys.nodes)).sort();
    const all = await Promise.all(names.map((n) => this.findNode(n)));
    return all.filter((n): n is NodeRecord => n !== null);
  }

  /** The nodes with their state as heard at `now`: a ready node whose agent has been quiet too long is silent (NodeInfo.state). */
  async listNodesAsHeard(now: Date): Promise<NodeRecord[]> {
    return (await this.listNodes()).map((n) => this.asHeard(n, now));
  }

  private asHeard(n: NodeRecord, now: Date): NodeRecord {
    const quiet = now.getTime() - Date.parse(n.lastSeenAt) > this.options.nodeSilentAfterMs;
    return n.state === 'ready' && quiet ? { ...n, state: 'silent' } : n;
  }

  /** Notes that a node's agent was heard from; NotFound when it is not registered (the agent then registers again). */
  async touchNode(name: string, now: Date): Promise<void> {
    const n = await this.getNode(name);
    await this.redis.set(keys.node(name), JSON.stringify({ ...n, lastSeenAt: now.toISOString() }));
  }

  async nodeByInstance(instanceId: string): Promise<string | null> {
    return this.redis.hget(keys.instances, instanceId);
  }

  /** Forgets a node that is gone (released, or taken by the cloud): it is no longer listed, placed on or priced. */
  async forgetNode(name: string): Promise<void> {
    const n = await this.findNode(name);
    await Promise.all([this.redis.del(keys.node(name)), this.redis.srem(keys.nodes, name), n ? this.redis.hdel(keys.instances, n.instanceId) : undefined]);
  }

  /**
   * Forgets the nodes the cloud took: an interruption's deadline passed more
   * than nodeSilentAfterMs ago and the node has not been heard from since it
   * (a node still pushing was not taken, whatever the notice said). Sessions
   * still recorded on one went with it. One with a checkpoint goes back to
   * it (checkpointed, woken like any other on its user's next request),
   * unless it had failed already or the notice said hibernate: that node
   * may come back with the session still running, and a copy woken
   * elsewhere would then run twice. The others, and those, are marked
   * failed, their last checkpoint kept.
   * Returns what it forgot.
   */
  async forgetTakenNodes(now: Date, notices?: NoticeInfo[]): Promise<TakenNode[]> {
    const out: TakenNode[] = [];
    for (const notice of notices ?? (await this.listNotices(now))) {
      if (notice.kind !== 'interruption' || notice.deadline === null) continue;
      const deadline = Date.parse(notice.deadline);
      if (now.getTime() - deadline <= this.options.nodeSilentAfterMs) continue;
      const n = await this.findNode(notice.node);
      if (!n || Date.parse(n.lastSeenAt) >= deadline) continue;
      const gone: TakenNode = { node: n.name, failed: [], backToCheckpoint: [] };
      for (const s of await this.listSessions()) {
        if (s.node !== n.name || s.state === 'checkpointed' || s.state === 'stopped') continue;
        // One that had failed before stays failed: its checkpoint is from before whatever ended it.
        if (s.lastCheckpoint !== null && s.state !== 'failed' && notice.action !== 'hibernate') {
          const checkpointAt = (await this.checkpoints(s.id)).find((c) => c.checkpoint === s.lastCheckpoint)?.at ?? null;
          const lostWithNode = { node: n.name, at: now.toISOString(), checkpoint: s.lastCheckpoint, checkpointAt };
          await this.updateSession(s.id, { state: 'checkpointed', node: null, lastDisruptionAt: now.toISOString(), lostWithNode }, now);
          gone.backToCheckpoint.push({ id: s.id, checkpoint: s.lastCheckpoint });
        } else {
          await this.updateSession(s.id, { state: 'failed', node: null }, now);
          gone.failed.push(s.id);
        }
      }
      await this.forgetNode(n.name);
      out.push(gone);
    }
    return out;
  }

  async setNodeState(name: string, state: Exclude<NodeRecord['state'], 'silent'>): Promise<void> {
    const n = await this.getNode(name);
    await this.redis.set(keys.node(name), JSON.stringify({ ...n, state }));
  }

  // ---- sessions

  /**
   * Writes a session's record. When hubshift last disrupted it is also kept
   * in a field of its own, written only by the steps that disrupt: a metrics
   * push that read the record just before a step wrote cannot set it back.
   * What the start gave it (its hub route, group, requested memory) is kept
   * apart too, written once known and never cleared: an agent's first push
   * can read the record before the start writes it, and write after.
   * `rec` is taken as its schema takes it: fields with defaults may be left out.
   */
  async putSession(rec: z.input<typeof SessionRecord>): Promise<void> {
    const parsed = SessionRecord.parse(rec);
    const fields = ['json', JSON.stringify(parsed), 'node', rec.node ?? ''];
    const origin = SessionOrigin.parse(parsed);
    if (origin.hub !== null || origin.group !== null || origin.requestedBytes !== null) fields.push('origin', JSON.stringify(origin));
    await Promise.all([this.redis.hset(keys.session(rec.id), ...fields), this.redis.sadd(keys.sessions, rec.id)]);
  }

  async findSession(id: string): Promise<SessionRecord | null> {
    const [json, disrupted, originJson] = await this.redis.hmget(keys.session(id), 'json', 'disruptedAt', 'origin');
    const rec = parseJson(SessionRecord, json, `session ${id}`);
    if (!rec) return null;
    if (disrupted && (rec.lastDisruptionAt === null || disrupted > rec.lastDisruptionAt)) rec.lastDisruptionAt = disrupted;
    const origin = parseJson(SessionOrigin, originJson, `start of session ${id}`);
    return origin ? { ...rec, hub: origin.hub ?? rec.hub, group: origin.group ?? rec.group, requestedBytes: origin.requestedBytes ?? rec.requestedBytes } : rec;
  }

  async getSession(id: string): Promise<SessionRecord> {
    const s = await this.findSession(id);
    if (!s) throw new NotFoundError(`the scheduler knows no session ${id} (hubshift session ls --scheduler URL lists them)`);
    return s;
  }

  async updateSession(id: string, patch: Partial<SessionRecord>, now: Date): Promise<SessionRecord> {
    const next = { ...(await this.getSession(id)), ...patch, updatedAt: now.toISOString() };
    if (patch.lastDisruptionAt) await this.redis.hset(keys.session(id), 'disruptedAt', patch.lastDisruptionAt);
    await this.putSession(next);
    return next;
  }

  /** Points a hub prefix at a session (a new server of the same user takes the prefix over). */
  async setRoute(prefix: string, id: string): Promise<void> {
    await this.redis.hset(keys.routes, prefix, id);
  }

  /** The session whose hub prefix begins this path (/user/NAME/... ), if any. */
  async sessionAtPath(path: string): Promise<SessionRecord | null> {
    const prefixes = routePrefixes(path);
    if (prefixes.length === 0) return null;
    const id = (await this.redis.hmget(keys.routes, ...prefixes)).find((x) => x !== null);
    return id ? this.findSession(id) : null;
  }

  async listSessions(): Promise<SessionRecord[]> {
    const ids = await this.redis.smembers(keys.sessions);
    const all = await Promise.all(ids.map((id) => this.findSession(id)));
    return all.filter((s): s is SessionRecord => s !== null).sort((a, b) => a.id.localeCompare(b.id));
  }

  async deleteSession(id: string): Promise<void> {
    const s = await this.findSession(id);
    // Only this session's route: the prefix may already be the user's next session's.
    if (s?.hub) await this.redis.eval("if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('hdel', KEYS[1], ARGV[1]) end", 1, keys.routes, s.hub.prefix, id);
    await this.redis.set(keys.removed(id), new Date().toISOString(), 'EX', REMOVED_MEMORY_SECONDS);
    await Promise.all([this.redis.del(keys.session(id), keys.samples(id), keys.checkpoints(id)), this.redis.srem(keys.sessions, id)]);
  }

  /** Notes a committed checkpoint of a session (the last 100 are kept). */
  async addCheckpoint(c: CheckpointRecord): Promise<void> {
    await this.redis.lpush(keys.checkpoints(c.sessionId), JSON.stringify(CheckpointRecord.parse(c)));
    await this.redis.ltrim(keys.checkpoints(c.sessionId), 0, 99);
  }

  /** A session's checkpoints, newest first. */
  async checkpoints(id: string): Promise<CheckpointRecord[]> {
    const raw = await this.redis.lrange(keys.checkpoints(id), 0, -1);
    return raw.map((t) => parseJson(CheckpointRecord, t, `checkpoint of ${id}`) as CheckpointRecord);
  }

  async samples(id: string): Promise<UsageSample[]> {
    const raw = await this.redis.lrange(keys.samples(id), 0, -1);
    // Stored newest first; policies want them oldest first.
    return raw.map((t) => parseJson(UsageSample, t, `sample of ${id}`) as UsageSample).reverse();
  }

  /**
   * Takes an agent's metrics push. A running session is where its agent
   * says, unless an operation holds it (a move: its worker records where the
   * session runs, and a push the source sampled before the freeze may land
   * after that record); a report of a stopped or checkpointed one counts
   * only from the node the scheduler has it on (a source that still lists a
   * session it handed over must not pull it back), or when it brings a newer
   * checkpoint while that node is quiet.
   */
  async applyPush(node: string, push: MetricsPush, now: Date): Promise<{ updated: number; ignored: number }> {
    let updated = 0;
    let ignored = 0;
    await Promise.all(
      push.sessions.map(async (r: SessionReport) => {
        const before = await this.findSession(r.id);
        if (!before && (await this.redis.exists(keys.removed(r.id)))) {
          // Removed while this push was on its way (or by an agent that has not heard yet).
          ignored++;
          return;
        }
        if (r.state === 'running' && before?.node && before.node !== node && (await this.claimOf(r.id)) !== null) {
          ignored++;
          return;
        }
        if (r.state !== 'running' && before && before.node !== node) {
          // One exception: a node that kept the session in the store (a move
          // whose source vanished) is heard once the session's own node is quiet.
          const newer = r.lastCheckpoint !== null && (before.lastCheckpoint === null || r.lastCheckpoint > before.lastCheckpoint);
          const ownerQuiet = before.node === null || now.getTime() - Date.parse(before.updatedAt) > this.options.staleAfterMs;
          if (!(r.state === 'checkpointed' && newer && ownerQuiet)) {
            ignored++;
            return;
          }
        }
        const rec: SessionRecord = {
          id: r.id,
          user: r.user,
          node: r.state === 'checkpointed' || r.state === 'stopped' ? null : node,
          state: r.state,
          url: r.url,
          token: r.token,
          rssBytes: r.rssBytes,
          cpuCores: r.cpuCores,
          busy: r.busy,
          connections: r.connections,
          lastActivityAt: r.lastActivityAt ?? before?.lastActivityAt ?? push.at,
          lastDisruptionAt: before?.lastDisruptionAt ?? null,
          // Told while it woke; a node reporting it means it runs again (or was checkpointed anew).
          lostWithNode: null,
          hub: before?.hub ?? null,
          group: before?.group ?? null,
          requestedBytes: before?.requestedBytes ?? null,
          lastCheckpoint: r.lastCheckpoint ?? before?.lastCheckpoint ?? null,
          updatedAt: now.toISOString(),
        };
        await this.putSession(rec);
        if (r.state === 'running') {
          const sample: UsageSample = { at: push.at, rssBytes: r.rssBytes, cpuCores: r.cpuCores };
          await this.redis.lpush(keys.samples(r.id), JSON.stringify(sample));
          await this.redis.ltrim(keys.samples(r.id), 0, this.options.sampleRetention - 1);
        }
        updated++;
      }),
    );
    return { updated, ignored };
  }

  // ---- notices

  async addNotice(n: NoticeInfo): Promise<void> {
    await this.redis.hset(keys.notices, n.id, JSON.stringify(NoticeInfo.parse(n)));
  }

  /** Notices still in force; those past their deadline by more than an hour are dropped. */
  async listNotices(now: Date): Promise<NoticeInfo[]> {
    const all = await this.redis.hgetall(keys.notices);
    const out: NoticeInfo[] = [];
    for (const [id, text] of Object.entries(all)) {
      const n = parseJson(NoticeInfo, text, `notice ${id}`) as NoticeInfo;
      const expired = (n.deadline ? Date.parse(n.deadline) : Date.parse(n.receivedAt) + 6 * 3600_000) + 3600_000 < now.getTime();
      if (expired) await this.redis.hdel(keys.notices, id);
      else out.push(n);
    }
    return out.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
  }

  // ---- operations

  private claimKey(op: Operation): string {
    return op.sessionId ? keys.op(op.sessionId) : keys.nodeOp(op.source ?? '');
  }

  private subject(op: Operation): string {
    return op.sessionId ?? `node:${op.source}`;
  }

  /**
   * Claims the operation's session (or node): at most one operation each at
   * a time, across every scheduler sharing this Redis. `expectedNode`: the
   * session must still be on that node.
   */
  async claim(op: Operation, expectedNode: string | null, ttlSeconds = 3600): Promise<ClaimResult> {
    const key = this.claimKey(op);
    const sessionKey = op.sessionId ? keys.session(op.sessionId) : key;
    const r = (await this.redis.eval(CLAIM, 2, key, sessionKey, op.id, String(ttlSeconds), op.sessionId ? (expectedNode ?? '') : '')) as [string, string];
    if (r[0] !== 'ok') return { ok: false, why: r[0] === 'held' ? 'held' : 'moved', detail: r[1] };
    await this.redis.hset(keys.inflight, this.subject(op), JSON.stringify(op));
    return { ok: true };
  }

  /** Ends an operation's claim (only if it still holds it). */
  async release(op: Operation): Promise<void> {
    await this.redis.eval(RELEASE_IF, 1, this.claimKey(op), op.id);
    const current = parseJson(Operation, await this.redis.hget(keys.inflight, this.subject(op)), 'operation');
    if (current?.id === op.id) await this.redis.hdel(keys.inflight, this.subject(op));
  }

  /** The operation id holding a session, if any. */
  async claimOf(sessionId: string): Promise<string | null> {
    return this.redis.get(keys.op(sessionId));
  }

  async inFlight(): Promise<Operation[]> {
    const all = await this.redis.hgetall(keys.inflight);
    return Object.values(all).map((t) => parseJson(Operation, t, 'operation') as Operation);
  }

  async stepResult<T>(opId: string, step: string, schema: z.ZodType<T>): Promise<T | null> {
    return parseJson(schema, await this.redis.hget(keys.steps(opId), step), `result of ${opId} ${step}`);
  }

  async setStepResult(opId: string, step: string, value: unknown): Promise<void> {
    await this.redis.hset(keys.steps(opId), step, JSON.stringify(value));
    await this.redis.expire(keys.steps(opId), 7 * 86_400);
  }

  // ---- the action log

  async recordAction(a: ActionRecord): Promise<void> {
    await this.redis.lpush(keys.actions, JSON.stringify(ActionRecord.parse(a)));
    await this.redis.ltrim(keys.actions, 0, this.options.actionRetention - 1);
  }

  async actions(limit = 100): Promise<ActionRecord[]> {
    const raw = await this.redis.lrange(keys.actions, 0, Math.max(0, limit - 1));
    return raw.map((t) => parseJson(ActionRecord, t, 'action') as ActionRecord);
  }

  // ---- scheduled policies

  async lastRuns(): Promise<Record<string, string>> {
    return this.redis.hgetall(keys.lastRuns);
  }

  async setLastRun(policy: string, at: Date): Promise<void> {
    await this.redis.hset(keys.lastRuns, policy, at.toISOString());
  }

  // ---- the policies' view

  /**
   * Everything an evaluation needs, read in one pass. Samples are read only
   * when a policy that looks at them (rightsize) is due: they are the bulk.
   * The instance types are the registered nodes' own until a cloud catalog
   * is configured. `lastRuns`: when the caller has just read them.
   */
  async snapshot(now: Date, opts: { withSamples: boolean; lastRuns?: Record<string, string>; notices?: NoticeInfo[] }): Promise<ClusterSnapshot> {
    const [nodes, sessions, notices, ops, lastRuns] = await Promise.all([this.listNodesAsHeard(now), this.listSessions(), opts.notices ?? this.listNotices(now), this.inFlight(), opts.lastRuns ?? this.lastRuns()]);
    const snapshots: SessionSnapshot[] = await Promise.all(
      sessions.map(async (s) => ({
        id: s.id,
        user: s.user,
        node: s.node,
        state: s.state,
        rssBytes: s.rssBytes,
        cpuCores: s.cpuCores,
        busy: s.busy,
        connections: s.connections,
        lastActivityAt: s.lastActivityAt,
        lastDisruptionAt: s.lastDisruptionAt,
        samples: opts.withSamples ? await this.samples(s.id) : [],
      })),
    );
    const inFlight: InFlightOperation[] = ops.map((o) => ({ sessionId: o.sessionId, node: o.source, action: o.kind }));
    // Already parsed piecewise on the way in; 10k sessions need not be parsed twice.
    return {
      nodes: nodes.map(({ agentUrl: _u, agentToken: _t, lastSeenAt: _l, ...n }) => n),
      sessions: snapshots,
      notices,
      inFlight,
      instanceTypes: typesFromNodes(nodes),
      lastRuns,
    };
  }
}
