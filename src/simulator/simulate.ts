import type { CatalogEntry, LaunchCandidate } from '../core/cloud.js';
import type { ClusterSnapshot, InstanceTypeInfo, NodeInfo, NoticeInfo, SessionSnapshot } from '../core/cluster.js';
import type { Decision } from '../core/decision.js';
import { InputError } from '../core/errors.js';
import type { LedgerCause } from '../core/ledger.js';
import type { SessionState } from '../core/session.js';
import type { DelayStats, SimulationReport, Trace, TraceStartEvent, TraceUsageEvent } from '../core/trace.js';
import { evaluate } from '../policy/evaluate.js';
import { percentile } from '../policy/percentile.js';
import type { PolicySet } from '../policy/policy-schema.js';
import { duePolicies } from '../policy/schedule.js';
import { instanceTypesOf } from '../pricing/catalog.js';
import { NODE_RESERVED_BYTES, rankCandidates } from '../pricing/choose-instance.js';
import { ledgerMinute, zeroTotals, type LedgerSessionInput } from '../pricing/ledger.js';
import { Random } from './random.js';
import { SIM_ZONE } from './sim-catalog.js';
import { ASSUMED_NETWORK_GBPS, defaultMovesAtOnce, soonestLane } from '../core/moves-at-once.js';
import { checkpointSeconds, migrateSeconds, restoreSeconds, type OpTimings } from './timings.js';

export interface SimulationOptions {
  policies: PolicySet;
  catalog: readonly CatalogEntry[];
  timings: OpTimings;
  seed: number;
  /** Share of a spot pool's capacity reclaimed in a month (AWS Spot Advisor's figure), 0 to 1. */
  spotReclaimPerMonth: number;
  spotPriceFactor: number;
  cullAfterMs: number;
  /** After an interruption, no spot from that pool for this long (the launcher falls back). */
  spotBackoffMs?: number;
  onDay?: (day: number, days: number) => void;
}

const MINUTE = 60_000;
const MINUTES_PER_MONTH = 730 * 60;
/** Room a session takes when placed, over the larger of its guarantee and its memory (the consolidate policy's default). */
const PLACE_HEADROOM = 1.2;

type OpKind = 'start' | 'restore' | 'checkpoint' | 'snapshot' | 'migrate';

interface SimOp {
  kind: OpKind;
  session: SimSession;
  source: string | null;
  target: string | null;
  startMs: number;
  endMs: number;
  /** Part of an evacuation under a notice. */
  eviction: boolean;
  requestedMs: number;
}

interface SimNode {
  info: NodeInfo;
  pool: string;
  readyMs: number;
  deadlineMs: number | null;
  notice: NoticeInfo | null;
  releasing: boolean;
  /**
   * When each of its lanes is next free: operations leave it as many at once
   * as it registers (movesAtOnce), each on the lane free soonest, as the
   * scheduler's workers run them (scheduler/node-lanes.ts).
   */
  lanesFreeAtMs: number[];
}

interface SimSession {
  snap: SessionSnapshot;
  group: string | null;
  requestedBytes: number | null;
  peakRss: number;
  usage: TraceUsageEvent | null;
  lastActivityMs: number;
  /** The time snap.lastActivityAt shows. */
  activityShownMs: number;
  cause: LedgerCause | null;
  op: SimOp | null;
  wakeRequestedMs: number | null;
  stopRequested: boolean;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Where an operation off a node runs: on the lane free soonest, from when it
 * is free, and whether that is after the move's latest start (`startByMs`),
 * which a worker meets by checkpointing the session instead (scheduler/steps.ts).
 */
export function onLanes(lanesFreeAtMs: readonly number[], nowMs: number, startByMs?: number): { lane: number; begin: number; late: boolean } {
  const lane = soonestLane(lanesFreeAtMs);
  const begin = Math.max(nowMs, lanesFreeAtMs[lane]!);
  return { lane, begin, late: startByMs !== undefined && begin > startByMs };
}

function stats(values: readonly number[]): DelayStats {
  const r = (x: number): number => Math.round(x * 100) / 100;
  return {
    count: values.length,
    p50: r(percentile(values, 50)),
    p95: r(percentile(values, 95)),
    max: r(values.reduce((a, b) => Math.max(a, b), 0)),
    totalSeconds: r(values.reduce((a, b) => a + b, 0)),
  };
}

/**
 * Replays a trace minute by minute through the policy engine (evaluate, the
 * same code the scheduler runs), the pricing and the ledger. The world
 * around it is modelled: nodes launch (cheapest per GB-hour, spot first) when
 * a starting or waking server finds no room and boot in a fixed time;
 * operations take the benchmarks' times, as many at once off a node as its
 * agent would register, and a move reached after its latest start is a
 * checkpoint instead, as in the scheduler's workers;
 * each spot pool is interrupted at random at the stated monthly rate, all its
 * nodes together with two minutes' notice; a server still on a node when the
 * node is reclaimed is lost. Pure: no clock, no I/O; the seed fixes every draw.
 */
export class Simulation {
  private readonly rnd: Random;
  private readonly nodes = new Map<string, SimNode>();
  private readonly sessions = new Map<string, SimSession>();
  private readonly byId = new Map<string, SimSession>();
  private readonly ops = new Set<SimOp>();
  private readonly backoffUntil = new Map<string, number>();
  private readonly lastRuns: Record<string, string> = {};
  private readonly instanceTypes: InstanceTypeInfo[];
  private readonly spotMinuteChance: number;
  private readonly evacuableBytes: number;
  private nodeSeq = 0;
  private sessionSeq = 0;
  private now = 0;
  private readonly counts: Record<string, number> = {};
  private readonly delays = { wakes: [] as number[], migrationDowntimes: [] as number[], startWaits: [] as number[] };
  private readonly spot = { poolInterruptions: 0, nodesInterrupted: 0, spotNodesLaunched: 0, moved: 0, checkpointed: 0, lost: 0 };
  private servers = 0;
  private overcommitted = 0;
  private readonly totals = zeroTotals();
  private readonly savings: Record<string, number> = {};
  private spotNodeMinutes = 0;
  private onDemandNodeMinutes = 0;

  constructor(private readonly o: SimulationOptions) {
    if (!(o.spotReclaimPerMonth >= 0 && o.spotReclaimPerMonth <= 1)) throw new InputError(`the spot reclaim rate must be a monthly fraction from 0 to 1, got ${o.spotReclaimPerMonth}`);
    this.rnd = new Random(o.seed);
    this.instanceTypes = instanceTypesOf(o.catalog);
    // The per-minute chance that gives the monthly fraction: 1 - (1 - f)^(1/minutes in a month). f = 1: every minute.
    this.spotMinuteChance = 1 - Math.pow(1 - o.spotReclaimPerMonth, 1 / MINUTES_PER_MONTH);
    // Spot nodes no larger than what can be checkpointed to the store within the notice (with a fifth spare for per-session costs).
    const evict = o.policies.policies.find((p) => p.kind === 'spot-eviction');
    const margin = evict && evict.kind === 'spot-eviction' ? evict.safetyMargin / 1000 : 20;
    this.evacuableBytes = 0.8 * (o.timings.spotNoticeSeconds - margin - o.timings.checkpointFixedSeconds) * o.timings.checkpointBytesPerSecond;
  }

  run(trace: Trace): SimulationReport {
    const startMs = Date.parse(trace.header.start);
    const endMs = Date.parse(trace.header.end);
    const days = Math.ceil((endMs - startMs) / (1440 * MINUTE));
    let next = 0;
    for (let t = startMs; t < endMs; t += MINUTE) {
      const windowEnd = t + MINUTE;
      // What happens inside the minute, in time order: operations ending, nodes reclaimed, the trace's events.
      for (;;) {
        const op = this.nextOp(windowEnd);
        const reclaim = this.nextReclaim(windowEnd);
        const ev = next < trace.events.length && trace.events[next]!.atMs < windowEnd ? trace.events[next]! : null;
        const times = [op?.endMs ?? Infinity, reclaim?.deadlineMs ?? Infinity, ev?.atMs ?? Infinity];
        const first = Math.min(...times);
        if (first === Infinity) break;
        this.now = first;
        if (op && op.endMs === first) this.finish(op);
        else if (reclaim && reclaim.deadlineMs === first) this.reclaim(reclaim);
        else if (ev) {
          next++;
          if (ev.type === 'start') this.start(ev);
          else if (ev.type === 'usage') this.use(ev);
          else this.stop(ev.user);
        }
      }
      this.now = windowEnd;
      this.interruptSpot();
      this.sample();
      this.decide();
      this.releaseEmptied();
      this.account(t);
      if (this.o.onDay && (windowEnd - startMs) % (1440 * MINUTE) === 0) this.o.onDay((windowEnd - startMs) / (1440 * MINUTE), days);
    }
    return this.report(trace);
  }

  private count(what: string): void {
    this.counts[what] = (this.counts[what] ?? 0) + 1;
  }

  private nextOp(before: number): SimOp | null {
    let best: SimOp | null = null;
    for (const op of this.ops) if (op.endMs < before && (!best || op.endMs < best.endMs)) best = op;
    return best;
  }

  private nextReclaim(before: number): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.nodes.values()) if (n.deadlineMs !== null && n.deadlineMs < before && (!best || n.deadlineMs < (best.deadlineMs ?? Infinity))) best = n;
    return best;
  }

  // --- the trace's events -------------------------------------------------

  private start(ev: TraceStartEvent & { atMs: number }): void {
    const id = `sim-${(++this.sessionSeq).toString(36)}`;
    const s: SimSession = {
      snap: { id, user: ev.user, node: null, state: 'starting', rssBytes: 0, cpuCores: 0, busy: false, connections: 0, lastActivityAt: iso(ev.atMs), lastDisruptionAt: null, samples: [] },
      group: ev.group,
      requestedBytes: ev.requestedBytes,
      peakRss: 0,
      usage: null,
      lastActivityMs: ev.atMs,
      activityShownMs: ev.atMs,
      cause: null,
      op: null,
      wakeRequestedMs: null,
      stopRequested: false,
    };
    this.sessions.set(ev.user, s);
    this.byId.set(id, s);
    this.servers++;
    this.place(s, 'start', ev.atMs);
  }

  private use(ev: TraceUsageEvent): void {
    const s = this.sessions.get(ev.user);
    if (!s) return;
    s.usage = ev;
    if (s.snap.state === 'failed' && ev.active) {
      // Its state was lost: the user's next request starts a new server.
      this.forget(s);
      this.start({ type: 'start', at: ev.at, atMs: this.now, user: ev.user, group: s.group, requestedBytes: s.requestedBytes });
      const fresh = this.sessions.get(ev.user);
      if (fresh) fresh.usage = ev;
      return;
    }
    if (s.snap.node !== null && s.op?.kind !== 'start') this.setMemory(s, ev.rssBytes);
    if (ev.active || ev.busy > 0) this.wake(s);
  }

  private stop(user: string): void {
    const s = this.sessions.get(user);
    if (!s) return;
    if (s.op) s.stopRequested = true;
    else this.forget(s);
  }

  private forget(s: SimSession): void {
    if (s.snap.state !== 'failed') s.snap.state = 'stopped';
    this.sessions.delete(s.snap.user);
    this.byId.delete(s.snap.id);
  }

  private setMemory(s: SimSession, rss: number): void {
    s.snap.rssBytes = rss;
    if (rss > s.peakRss) s.peakRss = rss;
  }

  /** A request reaches a checkpointed server: restore it (on a node with room, launching one if none). */
  private wake(s: SimSession): void {
    if (s.snap.state === 'checkpointed' && !s.op) this.place(s, 'restore', this.now);
    else if (s.snap.state === 'checkpointing' && s.wakeRequestedMs === null) s.wakeRequestedMs = this.now;
  }

  // --- placement and nodes ------------------------------------------------

  private room(s: SimSession): number {
    return Math.max(s.requestedBytes ?? 0, s.usage?.rssBytes ?? s.snap.rssBytes, s.peakRss);
  }

  private freeBytes(n: SimNode): number {
    let used = NODE_RESERVED_BYTES;
    for (const s of this.sessions.values()) if (s.snap.node === n.info.name || s.op?.target === n.info.name) used += this.room(s);
    return n.info.memoryBytes - used;
  }

  private usable(n: SimNode): boolean {
    return n.notice === null && !n.releasing;
  }

  /** Puts a starting or waking server on the cheapest node (per GB-hour) with room, launching one when none has. */
  private place(s: SimSession, kind: 'start' | 'restore', requestedMs: number): void {
    const need = this.room(s) * PLACE_HEADROOM;
    let node: SimNode | null = null;
    let best = Infinity;
    for (const n of this.nodes.values()) {
      if (!this.usable(n) || this.freeBytes(n) < need) continue;
      const perGb = n.info.pricePerHour / n.info.memoryBytes;
      if (perGb < best) {
        best = perGb;
        node = n;
      }
    }
    node ??= this.launch(need + NODE_RESERVED_BYTES, s.snap.user);
    const begin = Math.max(this.now, node.readyMs);
    const seconds = kind === 'restore' ? restoreSeconds(this.o.timings, this.room(s)) : 0;
    const op: SimOp = { kind, session: s, source: null, target: node.info.name, startMs: begin, endMs: begin + seconds * 1000, eviction: false, requestedMs };
    s.op = op;
    s.snap.node = node.info.name;
    s.snap.state = kind === 'start' ? 'starting' : 'restoring';
    s.wakeRequestedMs = null;
    this.ops.add(op);
  }

  private launch(bytes: number, forUser: string): SimNode {
    let candidates: LaunchCandidate[];
    try {
      candidates = rankCandidates(this.o.catalog, { memoryBytes: Math.ceil(bytes), cpus: 1, lifecycle: 'spot-then-on-demand', zones: [SIM_ZONE] }, 0);
    } catch (err) {
      throw new InputError(`${forUser}'s server needs ${(bytes / 2 ** 30).toFixed(1)} GiB: ${(err as Error).message}`);
    }
    const mem = new Map(this.o.catalog.map((c) => [c.name, c.memoryBytes]));
    const perGb = (c: LaunchCandidate): number => c.pricePerHour / (mem.get(c.instanceType) ?? 1);
    const spot = candidates.filter((c) => c.lifecycle === 'spot' && (this.backoffUntil.get(`${c.instanceType} ${c.zone}`) ?? 0) <= this.now && (mem.get(c.instanceType) ?? 0) <= this.evacuableBytes);
    const onDemand = candidates.filter((c) => c.lifecycle === 'on-demand');
    const order = (a: LaunchCandidate, b: LaunchCandidate): number => perGb(a) - perGb(b) || (mem.get(a.instanceType) ?? 0) - (mem.get(b.instanceType) ?? 0);
    const pick = [...spot].sort(order)[0] ?? [...onDemand].sort(order)[0];
    if (!pick) throw new InputError(`no instance type can hold ${forUser}'s server`);
    const entry = this.o.catalog.find((c) => c.name === pick.instanceType)!;
    const name = `node-${++this.nodeSeq}`;
    // What its agent would register (hubshift agent's defaults from the type's cores and link).
    const networkGbps = entry.networkGbps ?? ASSUMED_NETWORK_GBPS;
    const movesAtOnce = defaultMovesAtOnce({ cores: entry.cpus, networkGbps });
    const node: SimNode = {
      info: {
        name,
        instanceId: `i-sim${this.nodeSeq.toString(16).padStart(8, '0')}`,
        instanceType: entry.name,
        zone: pick.zone ?? SIM_ZONE,
        lifecycle: pick.lifecycle,
        pricePerHour: pick.pricePerHour,
        memoryBytes: entry.memoryBytes,
        cpus: entry.cpus,
        movesAtOnce,
        networkGbps,
        state: 'ready',
        registeredAt: iso(this.now),
      },
      pool: `${entry.name} ${pick.zone ?? SIM_ZONE}`,
      readyMs: this.now + this.o.timings.nodeBootSeconds * 1000,
      deadlineMs: null,
      notice: null,
      releasing: false,
      lanesFreeAtMs: new Array<number>(movesAtOnce).fill(0),
    };
    this.nodes.set(name, node);
    this.count(`launch ${pick.lifecycle}`);
    if (pick.lifecycle === 'spot') this.spot.spotNodesLaunched++;
    return node;
  }

  /** Each spot pool with nodes is interrupted this minute with the chance the monthly rate gives: all its nodes at once. */
  private interruptSpot(): void {
    if (this.spotMinuteChance === 0) return;
    const pools = new Map<string, SimNode[]>();
    for (const n of this.nodes.values()) {
      if (n.info.lifecycle !== 'spot' || n.notice !== null) continue;
      const list = pools.get(n.pool);
      if (list) list.push(n);
      else pools.set(n.pool, [n]);
    }
    for (const [pool, nodes] of pools) {
      if (!this.rnd.chance(this.spotMinuteChance)) continue;
      this.spot.poolInterruptions++;
      this.backoffUntil.set(pool, this.now + (this.o.spotBackoffMs ?? 3600_000));
      const deadline = this.now + this.o.timings.spotNoticeSeconds * 1000;
      for (const n of nodes) {
        this.spot.nodesInterrupted++;
        n.deadlineMs = deadline;
        n.notice = { id: `notice-${n.info.name}`, node: n.info.name, kind: 'interruption', action: 'terminate', deadline: iso(deadline), receivedAt: iso(this.now) };
        this.redirect(n.info.name);
      }
    }
  }

  /**
   * Nothing new lands on a node with a notice: starts and wakes bound for it
   * go elsewhere (the image is still in the store), and moves into it stop,
   * the session staying on its source (where an evacuation plans it again).
   */
  private redirect(node: string): void {
    for (const op of [...this.ops]) {
      if (op.target !== node) continue;
      const s = op.session;
      this.ops.delete(op);
      s.op = null;
      if (op.source !== null) continue;
      s.snap.node = null;
      if (op.kind === 'restore') s.snap.state = 'checkpointed';
      this.place(s, op.kind === 'restore' ? 'restore' : 'start', op.requestedMs);
    }
  }

  /** The deadline passed: the node is gone, and with it every server still on it. */
  private reclaim(n: SimNode): void {
    this.nodes.delete(n.info.name);
    this.redirect(n.info.name);
    for (const s of [...this.sessions.values()]) {
      if (s.snap.node !== n.info.name) continue;
      if (s.op) this.ops.delete(s.op);
      s.op = null;
      s.snap.node = null;
      s.snap.state = 'failed';
      this.spot.lost++;
      this.count('lost');
      if (s.stopRequested) this.forget(s);
    }
  }

  private releaseEmptied(): void {
    for (const n of [...this.nodes.values()]) {
      if (!n.releasing) continue;
      const involved = [...this.ops].some((op) => op.source === n.info.name || op.target === n.info.name);
      if (involved) continue;
      const holds = [...this.sessions.values()].some((s) => s.snap.node === n.info.name);
      if (holds) {
        // A move out failed: the node stays.
        n.releasing = false;
        n.info.state = 'ready';
        continue;
      }
      this.nodes.delete(n.info.name);
      this.count('release-node');
    }
  }

  // --- operations ---------------------------------------------------------

  private finish(op: SimOp): void {
    this.ops.delete(op);
    const s = op.session;
    s.op = null;
    const seconds = (op.endMs - op.requestedMs) / 1000;
    switch (op.kind) {
      case 'start':
        s.snap.state = 'running';
        s.lastActivityMs = Math.max(s.lastActivityMs, op.endMs);
        if (seconds > 0) this.delays.startWaits.push(seconds);
        break;
      case 'restore':
        s.snap.state = 'running';
        s.lastActivityMs = op.endMs;
        this.delays.wakes.push(seconds);
        this.count('restore');
        break;
      case 'checkpoint':
        s.snap.state = 'checkpointed';
        s.snap.node = null;
        if (op.eviction) this.spot.checkpointed++;
        break;
      case 'migrate':
        s.snap.node = op.target;
        this.delays.migrationDowntimes.push((op.endMs - op.startMs) / 1000);
        if (op.eviction) this.spot.moved++;
        break;
      case 'snapshot':
        break;
    }
    if (s.stopRequested) return this.forget(s);
    if (s.wakeRequestedMs !== null && s.snap.state === 'checkpointed') this.place(s, 'restore', s.wakeRequestedMs);
  }

  private decide(): void {
    const now = new Date(this.now);
    const nowIso = now.toISOString();
    const nodes: NodeInfo[] = [];
    const notices: NoticeInfo[] = [];
    for (const n of this.nodes.values()) {
      if (n.readyMs > this.now) continue;
      n.info.state = n.releasing ? 'cordoned' : 'ready';
      nodes.push(n.info);
      if (n.notice) notices.push(n.notice);
    }
    const sessions: SessionSnapshot[] = [];
    for (const s of this.sessions.values()) {
      if (s.snap.state === 'failed') continue;
      // Formatting a time is most of a minute's work for 300 servers: only when it changed.
      if (s.activityShownMs !== s.lastActivityMs) {
        s.snap.lastActivityAt = iso(s.lastActivityMs);
        s.activityShownMs = s.lastActivityMs;
      }
      sessions.push(s.snap);
    }
    const inFlight = [...this.ops].map((op) => ({ sessionId: op.session.snap.id, node: op.source ?? op.target, action: op.kind }));
    const snapshot: ClusterSnapshot = { nodes, sessions, notices, inFlight, instanceTypes: this.instanceTypes, lastRuns: this.lastRuns };
    const due = duePolicies(this.o.policies.policies, this.lastRuns, now);
    const decisions = evaluate(snapshot, this.o.policies, now);
    for (const name of due) this.lastRuns[name] = nowIso;
    for (const d of decisions) this.apply(d);
  }

  private apply(d: Decision): void {
    if (d.action === 'release-node') {
      const n = d.source ? this.nodes.get(d.source) : undefined;
      if (n && !n.releasing) {
        n.releasing = true;
        n.info.state = 'cordoned';
      }
      return;
    }
    const s = d.sessionId ? this.byId.get(d.sessionId) : undefined;
    const source = d.source ? this.nodes.get(d.source) : undefined;
    if (!s || !source || s.op || s.snap.node !== source.info.name || s.snap.state !== 'running') return;
    const target = d.target ? this.nodes.get(d.target) : undefined;
    if (d.action === 'migrate' && (!target || !this.usable(target))) return;
    const bytes = s.snap.rssBytes;
    const { lane, begin, late } = onLanes(source.lanesFreeAtMs, this.now, d.action === 'migrate' && d.startBy ? Date.parse(d.startBy) : undefined);
    const kind = late ? 'checkpoint' : d.action;
    if (late) this.count('checkpoint instead of a late move');
    const seconds = kind === 'migrate' ? migrateSeconds(this.o.timings, bytes) : checkpointSeconds(this.o.timings, bytes);
    const op: SimOp = {
      kind,
      session: s,
      source: source.info.name,
      target: kind === 'migrate' ? d.target : null,
      startMs: begin,
      endMs: begin + seconds * 1000,
      eviction: d.deadline !== null,
      requestedMs: this.now,
    };
    source.lanesFreeAtMs[lane] = op.endMs;
    this.ops.add(op);
    s.op = op;
    this.count(kind);
    if (kind === 'snapshot') return;
    if (kind === 'checkpoint') s.snap.state = 'checkpointing';
    s.snap.lastDisruptionAt = iso(this.now);
    s.cause = { policy: d.policy, action: kind, operation: `sim-op-${this.counts[kind]}` };
  }

  // --- each minute --------------------------------------------------------

  /** The minute's usage: memory, CPU, busy kernels (drawn from the busy share), connections and activity. */
  private sample(): void {
    const at = iso(this.now);
    for (const s of this.sessions.values()) {
      const u = s.usage;
      if (!u) continue;
      const running = s.snap.state === 'running';
      const busy = running && u.busy > 0 && (u.busy >= 1 || this.rnd.chance(u.busy));
      if (u.active || busy) s.lastActivityMs = this.now;
      if (s.snap.state === 'checkpointed' && (u.active || u.busy > 0)) this.wake(s);
      if (!running) continue;
      this.setMemory(s, u.rssBytes);
      s.snap.cpuCores = u.cpuCores;
      s.snap.busy = busy;
      s.snap.connections = u.connections;
      s.snap.samples.push({ at, rssBytes: u.rssBytes, cpuCores: u.cpuCores });
      if (s.snap.samples.length > 70) s.snap.samples.splice(0, s.snap.samples.length - 60);
    }
  }

  private account(minuteStart: number): void {
    const ledgerNodes: NodeInfo[] = [];
    const held = new Map<string, number>();
    for (const n of this.nodes.values()) {
      ledgerNodes.push(n.info);
      if (n.info.lifecycle === 'spot') this.spotNodeMinutes++;
      else this.onDemandNodeMinutes++;
    }
    const input: LedgerSessionInput[] = [];
    for (const s of this.sessions.values()) {
      const state: SessionState = s.snap.state;
      if (state === 'failed' || state === 'stopped') continue;
      if (s.snap.node !== null && (state === 'running' || state === 'checkpointing')) held.set(s.snap.node, (held.get(s.snap.node) ?? 0) + s.snap.rssBytes);
      input.push({
        id: s.snap.id,
        user: s.snap.user,
        group: s.group,
        node: s.snap.node,
        state,
        requestedBytes: s.requestedBytes,
        peakRssBytes: s.peakRss,
        lastActivityAt: s.snap.lastActivityAt,
        cause: s.cause,
      });
    }
    for (const [name, bytes] of held) if (bytes > (this.nodes.get(name)?.info.memoryBytes ?? Infinity)) this.overcommitted++;
    const { minute } = ledgerMinute({ minute: new Date(minuteStart), nodes: ledgerNodes, sessions: input, instanceTypes: this.instanceTypes, cullAfterMs: this.o.cullAfterMs });
    for (const k of Object.keys(this.totals) as (keyof typeof this.totals)[]) this.totals[k] += minute.totals[k];
    for (const [p, v] of Object.entries(minute.savingsByPolicy)) this.savings[p] = (this.savings[p] ?? 0) + v;
  }

  private report(trace: Trace): SimulationReport {
    const cents = (x: number): number => Math.round(x * 100) / 100;
    const cost = this.totals.actualUsd;
    return {
      trace: { start: trace.header.start, end: trace.header.end, users: new Set(trace.events.map((e) => e.user)).size, servers: this.servers, events: trace.events.length },
      seed: this.o.seed,
      policies: this.o.policies.policies.filter((p) => p.enabled).map((p) => p.name),
      cost: cents(cost),
      costBreakdown: {
        nodesUsd: cents(this.totals.nodesUsd),
        storeUsd: cents(this.totals.storeUsd),
        unusedCapacityUsd: cents(this.totals.unallocatedUsd),
        spotNodeHours: Math.round(this.spotNodeMinutes / 60),
        onDemandNodeHours: Math.round(this.onDemandNodeMinutes / 60),
      },
      baselines: { alwaysOnOnDemand: cents(this.totals.onDemandUsd), idleCulling: cents(this.totals.cullingUsd) },
      ratio: cost > 0 ? Math.round((this.totals.onDemandUsd / cost) * 100) / 100 : 0,
      ratioToCulling: cost > 0 ? Math.round((this.totals.cullingUsd / cost) * 100) / 100 : 0,
      savingsByPolicy: Object.fromEntries(Object.entries(this.savings).map(([k, v]) => [k, cents(v)])),
      lostSessions: this.spot.lost,
      culledByBaseline: this.totals.culled,
      delays: { wakes: stats(this.delays.wakes), migrationDowntimes: stats(this.delays.migrationDowntimes), startWaits: stats(this.delays.startWaits) },
      actions: { ...this.counts },
      spot: {
        monthlyReclaimFraction: this.o.spotReclaimPerMonth,
        priceFactor: this.o.spotPriceFactor,
        poolInterruptions: this.spot.poolInterruptions,
        nodesInterrupted: this.spot.nodesInterrupted,
        spotNodesLaunched: this.spot.spotNodesLaunched,
        evacuated: { moved: this.spot.moved, checkpointed: this.spot.checkpointed, lost: this.spot.lost },
      },
      overcommittedNodeMinutes: this.overcommitted,
      timings: { ...this.o.timings },
    };
  }
}
