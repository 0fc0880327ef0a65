import type { TraceEvent, TraceHeader } from '../core/trace.js';
import { Random } from './random.js';

/**
 * A synthetic month of a JupyterHub platform, from the published figures in
 * shared/notes/workload-facts.md (README, "Simulating a platform", lists them):
 *
 * - a user is active on a weekday with a probability drawn per user
 *   (lognormal weights, mean 0.2); Saturday x0.55, Sunday x0.65;
 * - an active day has 1 + Poisson(1) work periods (at most 4), lognormal
 *   length (median 45 min, p90 3 h); the first starts 08:30-17:30 on weekdays,
 *   10:00-20:00 at weekends (an assumption: no hour-of-day data was found),
 *   the next over an hour after the last ended;
 * - memory grows from 0.45 GB to the period's working set (lognormal, median
 *   0.7 GB, p90 3 GB, at most 90 % of the user's limit) and stays there while
 *   idle; limits 4 / 8 / 16 GB (75 / 20 / 5 %), guarantees a quarter of that;
 * - kernels busy 1-5 % of a work period; 5 % of periods end with a
 *   background run (a kernel busy for a lognormal 1-4 h, nobody watching);
 * - 30 % of periods end with the tab left open until the evening
 *   (20:00-22:00): an open connection keeps the idle policy away;
 * - a user stops their server at the end of 10 % of active days; otherwise
 *   it stays until the next day's work (what culling or hubshift act on).
 */
export interface GenerateOptions {
  users: number;
  days: number;
  seed: number;
  /** Midnight UTC of the first day. */
  start: Date;
  /** Every server is used from its start to its stop, never idle: a control for the idle policy. */
  alwaysActive?: boolean;
}

const GB = 1e9;
const MIN = 60_000;
const GROUPS = [
  ['astro', 3],
  ['climate', 2],
  ['bio', 2],
  ['ds100', 4],
  ['physics', 2],
  ['staff', 1],
] as const;
const LIMITS = [
  [4 * GB, 75],
  [8 * GB, 20],
  [16 * GB, 5],
] as const;
const WEEKDAY_ACTIVE = 0.2;

interface UserPlan {
  name: string;
  group: string;
  limit: number;
  activeOnWeekday: number;
  workingSet: number;
}

const iso = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

function planUsers(rnd: Random, n: number): UserPlan[] {
  const weights = Array.from({ length: n }, () => rnd.lognormal(1, 3));
  const mean = weights.reduce((a, b) => a + b, 0) / Math.max(1, n);
  const width = String(Math.max(1, n)).length;
  return weights.map((w, i) => {
    const limit = rnd.pick(LIMITS);
    return {
      name: `u${String(i + 1).padStart(Math.max(3, width), '0')}`,
      group: rnd.pick(GROUPS),
      limit,
      activeOnWeekday: Math.min(0.95, (WEEKDAY_ACTIVE * w) / mean),
      workingSet: rnd.lognormal(0.7 * GB, 3 * GB),
    };
  });
}

/** One user's events, in time order. */
function userEvents(rnd: Random, u: UserPlan, o: GenerateOptions, endMs: number): TraceEvent[] {
  const out: TraceEvent[] = [];
  let running = false;
  let last = -Infinity;
  const push = (e: TraceEvent): void => {
    const at = Date.parse(e.at);
    if (at < last || at >= endMs) return;
    last = at;
    out.push(e);
  };
  const usage = (at: number, rss: number, busy: number, cpu: number, active: boolean, connections: number): void =>
    push({ type: 'usage', at: iso(at), user: u.name, rssBytes: Math.round(rss), cpuCores: Number(cpu.toFixed(3)), busy: Number(busy.toFixed(3)), active, connections });
  for (let d = 0; d < o.days; d++) {
    const dayMs = o.start.getTime() + d * 1440 * MIN;
    const dow = new Date(dayMs).getUTCDay();
    const factor = dow === 6 ? 0.55 : dow === 0 ? 0.65 : 1;
    if (!rnd.chance(u.activeOnWeekday * factor)) continue;
    const periods = Math.min(4, 1 + rnd.poisson(1));
    const weekend = dow === 0 || dow === 6;
    let at = dayMs + Math.round(weekend ? rnd.uniform(600, 1200) : rnd.uniform(510, 1050)) * MIN;
    let lastEnd = at;
    for (let p = 0; p < periods && at < dayMs + 23 * 60 * MIN; p++) {
      // A background run of the day before may still go on: this period starts after it.
      if (at <= last) at = last + MIN;
      if (at >= dayMs + 23 * 60 * MIN) break;
      const length = Math.round(Math.min(600, Math.max(5, rnd.lognormal(45, 180)))) * MIN;
      const end = Math.min(at + length, dayMs + 1439 * MIN);
      const ws = Math.min(0.9 * u.limit, Math.max(0.3 * GB, u.workingSet * rnd.lognormal(1, 1.5)));
      if (!running) {
        push({ type: 'start', at: iso(at), user: u.name, group: u.group, requestedBytes: u.limit / 4 });
        running = true;
      }
      const busy = rnd.uniform(0.01, 0.05);
      const cpu = busy * rnd.uniform(0.8, 1.5) + 0.01;
      const base = Math.min(0.45 * GB, ws);
      const steps = Math.min(4, Math.floor((end - at) / (15 * MIN)));
      for (let i = 0; i <= steps; i++) {
        const t = at + Math.round(((end - at) * i) / (steps + 1) / MIN) * MIN;
        usage(t, steps === 0 ? ws : base + ((ws - base) * i) / steps, busy, cpu, true, 1);
      }
      if (o.alwaysActive) {
        push({ type: 'stop', at: iso(end), user: u.name });
        running = false;
        lastEnd = end;
      } else if (rnd.chance(0.05)) {
        const run = Math.round(rnd.lognormal(90, 240)) * MIN;
        usage(end, ws, 1, 1, false, 0);
        usage(end + run, ws, 0, 0.002, false, 0);
        lastEnd = end + run;
      } else {
        const tabOpen = rnd.chance(0.3);
        usage(end, ws, 0, 0.002, false, tabOpen ? 1 : 0);
        lastEnd = end;
        const closes = dayMs + Math.round(rnd.uniform(1200, 1320)) * MIN;
        if (tabOpen && closes > end) {
          usage(closes, ws, 0, 0.002, false, 0);
          lastEnd = closes;
        }
      }
      at = lastEnd + Math.round(60 + rnd.exponential(90)) * MIN;
    }
    if (running && rnd.chance(0.1)) {
      push({ type: 'stop', at: iso(lastEnd + Math.round(rnd.uniform(1, 30)) * MIN), user: u.name });
      running = out[out.length - 1]?.type !== 'stop';
    }
  }
  return out;
}

/** Header and events of a synthetic trace; the same options give the same lines. */
export function generateTrace(o: GenerateOptions): { header: TraceHeader; events: TraceEvent[] } {
  const rnd = new Random(o.seed);
  const endMs = o.start.getTime() + o.days * 1440 * MIN;
  const users = planUsers(rnd, o.users);
  const all: { at: number; e: TraceEvent }[] = [];
  // Each user gets a random source of its own, so adding users does not reshuffle the others.
  for (const u of users) for (const e of userEvents(new Random((o.seed * 1_000_003 + Number(u.name.slice(1))) >>> 0), u, o, endMs)) all.push({ at: Date.parse(e.at), e });
  all.sort((a, b) => a.at - b.at);
  return {
    header: {
      type: 'header',
      version: 1,
      start: iso(o.start.getTime()),
      end: iso(endMs),
      users: o.users,
      generator: { tool: 'hubshift trace generate', users: o.users, days: o.days, seed: o.seed, alwaysActive: o.alwaysActive ?? false, assumptions: 'README.md, Simulating a platform' },
    },
    events: all.map((x) => x.e),
  };
}

/** The trace as JSON Lines. */
export function* traceLines(t: { header: TraceHeader; events: readonly TraceEvent[] }): Generator<string> {
  yield JSON.stringify(t.header);
  for (const e of t.events) yield JSON.stringify(e);
}
