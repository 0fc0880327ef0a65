import { z } from 'zod';
import { Lifecycle } from './cluster.js';
import { SessionState } from './session.js';

const IsoTime = z.string().datetime({ offset: true });

/** What hubshift did to a session last, whose effect a minute's savings are put down to. */
export const LedgerCause = z.object({ policy: z.string(), action: z.string(), operation: z.string() });
export type LedgerCause = z.infer<typeof LedgerCause>;

/** One session in one minute of the ledger: what it cost and what it would have under each baseline. */
export const LedgerSessionMinute = z.object({
  id: z.string(),
  user: z.string(),
  group: z.string(),
  node: z.string().nullable(),
  state: SessionState,
  /** Memory it is charged for: the larger of what it asked for and what it held. */
  bytes: z.number().int().nonnegative(),
  actualUsd: z.number().nonnegative(),
  /** Baseline: always running, on on-demand capacity. */
  onDemandUsd: z.number().nonnegative(),
  /** Baseline: on on-demand capacity, killed after the culling idle time (state lost). */
  cullingUsd: z.number().nonnegative(),
  cause: LedgerCause.nullable(),
});
export type LedgerSessionMinute = z.infer<typeof LedgerSessionMinute>;

export const LedgerTotals = z.object({
  /** What was paid: nodes plus the store. */
  actualUsd: z.number(),
  nodesUsd: z.number(),
  storeUsd: z.number(),
  /** Node capacity no session held: paid for and unused. */
  unallocatedUsd: z.number(),
  onDemandUsd: z.number(),
  cullingUsd: z.number(),
  /** Sessions the culling baseline would have killed this minute (their state lost). */
  culled: z.number().int().nonnegative(),
});
export type LedgerTotals = z.infer<typeof LedgerTotals>;

/** One minute of the ledger as it is kept: totals and savings by policy (per-session detail goes into the day's sums). */
export const LedgerMinute = z.object({
  minute: IsoTime,
  totals: LedgerTotals,
  /** Savings against always-on on-demand, by the policy whose action caused them; sums to onDemand minus actual. */
  savingsByPolicy: z.record(z.string(), z.number()),
  nodes: z.array(z.object({ name: z.string(), instanceType: z.string(), lifecycle: Lifecycle, usd: z.number() })),
});
export type LedgerMinute = z.infer<typeof LedgerMinute>;

/** Sums of a party's minutes (a user, a group). */
export const LedgerSums = z.object({ actualUsd: z.number(), onDemandUsd: z.number(), cullingUsd: z.number(), savedUsd: z.number() });
export type LedgerSums = z.infer<typeof LedgerSums>;

/** A day's ledger: the minutes' totals added up, with savings by policy, user and group and cost by node. */
export const LedgerDay = z.object({
  date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/),
  minutes: z.number().int().nonnegative(),
  totals: LedgerTotals,
  savingsByPolicy: z.record(z.string(), z.number()),
  byUser: z.record(z.string(), LedgerSums),
  byGroup: z.record(z.string(), LedgerSums),
  byNode: z.record(z.string(), z.number()),
});
export type LedgerDay = z.infer<typeof LedgerDay>;

/** Where the month is heading: so far, the rate of the last day, and the month at that rate. */
export const LedgerForecast = z.object({
  month: z.string().regex(/^\d{4}-\d{2}$/),
  at: IsoTime,
  hoursLeft: z.number().nonnegative(),
  monthToDate: z.object({ actualUsd: z.number(), onDemandUsd: z.number(), cullingUsd: z.number() }),
  /** USD per hour over the last 24 h of minutes. */
  ratePerHour: z.object({ actualUsd: z.number(), onDemandUsd: z.number(), cullingUsd: z.number() }),
  forecast: z.object({ actualUsd: z.number(), onDemandUsd: z.number(), cullingUsd: z.number() }),
});
export type LedgerForecast = z.infer<typeof LedgerForecast>;

/** What the FinOps dashboard shows, as GET /v1/dashboard serves it. */
export const DashboardView = z.object({
  at: IsoTime,
  day: z.string(),
  nodes: z.array(
    z.object({
      name: z.string(),
      instanceType: z.string(),
      lifecycle: Lifecycle,
      zone: z.string(),
      state: z.string(),
      pricePerHour: z.number(),
      memoryBytes: z.number(),
      usedBytes: z.number(),
      sessions: z.number(),
      costToday: z.number(),
    }),
  ),
  sessions: z.array(
    z.object({
      id: z.string(),
      user: z.string(),
      group: z.string(),
      node: z.string().nullable(),
      state: SessionState,
      rssBytes: z.number(),
      cpuCores: z.number(),
      busy: z.boolean(),
      lastActivityAt: IsoTime,
      costPerHour: z.number(),
    }),
  ),
  actions: z.array(z.object({ at: IsoTime, action: z.string(), outcome: z.string(), sessionId: z.string().nullable(), source: z.string().nullable(), target: z.string().nullable(), policy: z.string(), reason: z.string(), costPerHour: z.number(), detail: z.string().nullable() })),
  /** The day in 15-minute buckets: cumulative USD, actual and under each baseline. */
  timeline: z.array(z.object({ at: IsoTime, actualUsd: z.number(), onDemandUsd: z.number(), cullingUsd: z.number() })),
  ledger: LedgerDay.nullable(),
  forecast: LedgerForecast,
});
export type DashboardView = z.infer<typeof DashboardView>;
