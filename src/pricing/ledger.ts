import type { InstanceTypeInfo, Lifecycle, NodeInfo } from '../core/cluster.js';
import type { LedgerCause, LedgerDay, LedgerForecast, LedgerMinute, LedgerSessionMinute, LedgerSums, LedgerTotals } from '../core/ledger.js';
import type { SessionState } from '../core/session.js';
import { storeCostPerHour } from './session-cost.js';

/** Savings not caused by any action: a session placed on capacity cheaper than on-demand from the start. */
export const PLACEMENT = 'placement';
/** Node capacity paid for and held by no session: counted against the savings. */
export const UNUSED_CAPACITY = 'unused capacity';
/** The culling baseline's idle time: Zero to JupyterHub's default (shared/notes/workload-facts.md). */
export const DEFAULT_CULL_AFTER_MS = 3600_000;

/** A session as the ledger needs it for one minute. */
export interface LedgerSessionInput {
  id: string;
  user: string;
  group: string | null;
  node: string | null;
  state: SessionState;
  /** What it asked for (JupyterHub's mem_limit), if anything. */
  requestedBytes: number | null;
  /** The most memory it has been seen to hold (a checkpointed session reports none). */
  peakRssBytes: number;
  lastActivityAt: string;
  cause: LedgerCause | null;
}

export interface LedgerInput {
  minute: Date;
  nodes: readonly Pick<NodeInfo, 'name' | 'instanceType' | 'lifecycle' | 'pricePerHour' | 'memoryBytes'>[];
  sessions: readonly LedgerSessionInput[];
  /** The catalog: on-demand prices of the types (a spot node's type is priced on-demand here). */
  instanceTypes: readonly Pick<InstanceTypeInfo, 'name' | 'memoryBytes' | 'onDemandPricePerHour'>[];
  cullAfterMs: number;
}

/**
 * On-demand USD per byte-hour, the baseline's rate: the cheapest on-demand
 * price per byte among the types known (the catalog's, and the on-demand
 * nodes' own). What an always-on platform would pay for the memory.
 */
export function onDemandRate(input: Pick<LedgerInput, 'nodes' | 'instanceTypes'>): number {
  const rates: number[] = [];
  for (const t of input.instanceTypes) if (t.onDemandPricePerHour > 0) rates.push(t.onDemandPricePerHour / t.memoryBytes);
  for (const n of input.nodes) if (n.lifecycle === 'on-demand' && n.pricePerHour > 0) rates.push(n.pricePerHour / n.memoryBytes);
  return rates.length ? Math.min(...rates) : 0;
}

export function zeroTotals(): LedgerTotals {
  return { actualUsd: 0, nodesUsd: 0, storeUsd: 0, unallocatedUsd: 0, onDemandUsd: 0, cullingUsd: 0, culled: 0 };
}

export function zeroSums(): LedgerSums {
  return { actualUsd: 0, onDemandUsd: 0, cullingUsd: 0, savedUsd: 0 };
}

/** What hubshift paid and what each baseline would have: the three figures forecasts and timelines carry. */
export type Costs = Pick<LedgerTotals, 'actualUsd' | 'onDemandUsd' | 'cullingUsd'>;

/** Adds `from`'s three costs into `into`, times `factor`. */
export function addCosts(into: Costs, from: Costs, factor = 1): Costs {
  into.actualUsd += from.actualUsd * factor;
  into.onDemandUsd += from.onDemandUsd * factor;
  into.cullingUsd += from.cullingUsd * factor;
  return into;
}

/**
 * Date.parse, remembered: every minute the ledger reads each session's last
 * activity, mostly the strings it read the minute before, and Date.parse
 * costs about 0.36 µs here (4 s of a simulated month of 300 users).
 */
const parsedTimes = new Map<string, number>();
function timeOf(iso: string): number {
  let t = parsedTimes.get(iso);
  if (t === undefined) {
    if (parsedTimes.size >= 100_000) parsedTimes.clear();
    t = Date.parse(iso);
    parsedTimes.set(iso, t);
  }
  return t;
}

const RUNS_ON_NODE: ReadonlySet<SessionState> = new Set(['starting', 'running', 'checkpointing', 'restoring']);

/**
 * One minute of the ledger. Nodes cost their price; a session on a node
 * costs its share of the node's price by memory held (shares never exceed
 * the node), one in the store costs its bytes kept; what no session holds is
 * unused capacity. Savings against always-on on-demand go to the policy of
 * the session's last action (PLACEMENT when none) and unused capacity counts
 * against them, so savings by policy add up to onDemand minus actual exactly.
 */
export function ledgerMinute(input: LedgerInput): { minute: LedgerMinute; sessions: LedgerSessionMinute[] } {
  const rate = onDemandRate(input);
  const at = input.minute.getTime();
  const nodes = new Map(input.nodes.map((n) => [n.name, n]));
  const bytesOf = (s: LedgerSessionInput): number => Math.max(s.requestedBytes ?? 0, s.peakRssBytes);
  // Held memory per node, for shares that never exceed the node.
  const held = new Map<string, number>();
  for (const s of input.sessions) if (s.node && nodes.has(s.node) && RUNS_ON_NODE.has(s.state)) held.set(s.node, (held.get(s.node) ?? 0) + bytesOf(s));

  const sessions: LedgerSessionMinute[] = [];
  const savingsByPolicy: Record<string, number> = {};
  const totals = zeroTotals();
  const allocated = new Map<string, number>();
  for (const s of input.sessions) {
    if (s.state === 'stopped' || s.state === 'failed') continue;
    const bytes = bytesOf(s);
    const node = s.node ? nodes.get(s.node) : undefined;
    let actualUsd: number;
    if (node && RUNS_ON_NODE.has(s.state)) {
      const share = bytes / Math.max(node.memoryBytes, held.get(node.name) ?? 0);
      actualUsd = (node.pricePerHour * share) / 60;
      allocated.set(node.name, (allocated.get(node.name) ?? 0) + actualUsd);
    } else {
      actualUsd = storeCostPerHour(bytes) / 60;
      totals.storeUsd += actualUsd;
    }
    const onDemandUsd = (bytes * rate) / 60;
    const idleMs = at - timeOf(s.lastActivityAt);
    const alive = idleMs < input.cullAfterMs;
    // Culled in the minute its idle time crosses the limit.
    if (!alive && idleMs < input.cullAfterMs + 60_000) totals.culled++;
    const cullingUsd = alive ? onDemandUsd : 0;
    totals.onDemandUsd += onDemandUsd;
    totals.cullingUsd += cullingUsd;
    const policy = s.cause?.policy ?? PLACEMENT;
    savingsByPolicy[policy] = (savingsByPolicy[policy] ?? 0) + onDemandUsd - actualUsd;
    sessions.push({ id: s.id, user: s.user, group: s.group ?? 'ungrouped', node: node ? node.name : null, state: s.state, bytes, actualUsd, onDemandUsd, cullingUsd, cause: s.cause });
  }
  const nodeRows: { name: string; instanceType: string; lifecycle: Lifecycle; usd: number }[] = [];
  for (const n of input.nodes) {
    const usd = n.pricePerHour / 60;
    totals.nodesUsd += usd;
    totals.unallocatedUsd += usd - (allocated.get(n.name) ?? 0);
    nodeRows.push({ name: n.name, instanceType: n.instanceType, lifecycle: n.lifecycle, usd });
  }
  if (totals.unallocatedUsd !== 0) savingsByPolicy[UNUSED_CAPACITY] = (savingsByPolicy[UNUSED_CAPACITY] ?? 0) - totals.unallocatedUsd;
  totals.actualUsd = totals.nodesUsd + totals.storeUsd;
  return { minute: { minute: input.minute.toISOString(), totals, savingsByPolicy, nodes: nodeRows }, sessions };
}

function addSums(into: Record<string, LedgerSums>, key: string, s: LedgerSessionMinute): void {
  const t = (into[key] ??= zeroSums());
  t.actualUsd += s.actualUsd;
  t.onDemandUsd += s.onDemandUsd;
  t.cullingUsd += s.cullingUsd;
  t.savedUsd += s.onDemandUsd - s.actualUsd;
}

/** Adds minutes up into days (UTC). What the ledger store keeps incrementally, in one pure place for tests and the simulator. */
export function sumDays(minutes: readonly { minute: LedgerMinute; sessions: readonly LedgerSessionMinute[] }[]): LedgerDay[] {
  const days = new Map<string, LedgerDay>();
  for (const { minute: m, sessions } of minutes) {
    const date = m.minute.slice(0, 10);
    const d = days.get(date) ?? { date, minutes: 0, totals: zeroTotals(), savingsByPolicy: {}, byUser: {}, byGroup: {}, byNode: {} };
    d.minutes++;
    for (const k of Object.keys(d.totals) as (keyof LedgerTotals)[]) d.totals[k] += m.totals[k];
    for (const [p, v] of Object.entries(m.savingsByPolicy)) d.savingsByPolicy[p] = (d.savingsByPolicy[p] ?? 0) + v;
    for (const n of m.nodes) d.byNode[n.name] = (d.byNode[n.name] ?? 0) + n.usd;
    for (const s of sessions) {
      addSums(d.byUser, s.user, s);
      addSums(d.byGroup, s.group, s);
    }
    days.set(date, d);
  }
  return [...days.values()].sort((a, b) => a.date.localeCompare(b.date));
}

/** The month at the last day's rate: month to date plus that rate times the hours left (UTC month). */
export function forecastMonth(now: Date, days: readonly LedgerDay[], lastDay: readonly LedgerMinute[]): LedgerForecast {
  const month = now.toISOString().slice(0, 7);
  const end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  const hoursLeft = Math.max(0, (end - now.getTime()) / 3600_000);
  const mtd: Costs = { actualUsd: 0, onDemandUsd: 0, cullingUsd: 0 };
  for (const d of days) if (d.date.startsWith(month)) addCosts(mtd, d.totals);
  const hours = lastDay.length / 60;
  const rate: Costs = { actualUsd: 0, onDemandUsd: 0, cullingUsd: 0 };
  for (const m of lastDay) addCosts(rate, m.totals, 1 / hours);
  return {
    month,
    at: now.toISOString(),
    hoursLeft,
    monthToDate: mtd,
    ratePerHour: rate,
    forecast: addCosts({ ...mtd }, rate, hoursLeft),
  };
}
