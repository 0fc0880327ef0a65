import { Cron } from 'croner';
import { z } from 'zod';
import { Duration } from './duration.js';

const Name = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and -');

const CronExpr = z.string().refine(
  (v) => {
    try {
      new Cron(v, { paused: true });
      return true;
    } catch {
      return false;
    }
  },
  { message: 'a cron expression like "0 3 * * *"' },
);

const TimeZone = z.string().refine(
  (tz) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  },
  { message: 'an IANA time zone like UTC or Europe/Berlin' },
);

const Base = { name: Name.optional(), enabled: z.boolean().default(true) };

/** Checkpoint a session nobody uses: no kernel busy, no connection, CPU under a threshold, for a while. */
export const IdlePolicy = z
  .object({
    ...Base,
    kind: z.literal('idle'),
    /** How long without activity. Default 30m. */
    idleFor: Duration.default(1_800_000),
    /** Cores in use below which a session counts as idle. Default 0.05. */
    cpuBelow: z.number().nonnegative().default(0.05),
  })
  .strict();

/** On an interruption notice, move every session off the node before the deadline, or checkpoint it. */
export const SpotEvictionPolicy = z
  .object({
    ...Base,
    kind: z.literal('spot-eviction'),
    /** Time kept in hand before the deadline. Default 20s. */
    safetyMargin: Duration.default(20_000),
    /** Expected move speed (bytes of memory per second) and fixed cost per move. */
    moveBytesPerSecond: z.number().positive().default(400e6),
    moveFixedSeconds: z.number().nonnegative().default(2),
    /** Expected checkpoint speed to the store and fixed cost per checkpoint: what is not moved must still get out in time. */
    checkpointBytesPerSecond: z.number().positive().default(450e6),
    checkpointFixedSeconds: z.number().nonnegative().default(1),
    /** Room a target must have beyond the session's memory. Default 1.1. */
    headroom: z.number().min(1).default(1.1),
  })
  .strict();

/** On a rebalance recommendation, prepare: snapshot sessions (left running) so a later eviction is quick. */
export const RebalancePolicy = z
  .object({
    ...Base,
    kind: z.literal('rebalance'),
    prepare: z.enum(['snapshot', 'none']).default('snapshot'),
  })
  .strict();

/** On a schedule, move a session whose usage over a window does not fit its node to one that fits and costs less. */
export const RightsizePolicy = z
  .object({
    ...Base,
    kind: z.literal('rightsize'),
    schedule: CronExpr,
    timezone: TimeZone.default('UTC'),
    /** Usage window. Default 1h. */
    window: Duration.default(3_600_000),
    /** Percentile of the window's samples. Default 95. */
    percentile: z.number().min(1).max(100).default(95),
    headroom: z.number().min(1).default(1.25),
    /** Moves that save less than this (USD/h) are not worth a disruption. Default 0.005. */
    minSavingPerHour: z.number().nonnegative().default(0.005),
  })
  .strict();

/** Empty nodes used below a threshold into the others, and release them. */
export const ConsolidatePolicy = z
  .object({
    ...Base,
    kind: z.literal('consolidate'),
    /** Optional schedule; without one it runs at every evaluation. */
    schedule: CronExpr.optional(),
    timezone: TimeZone.default('UTC'),
    /** Memory in use over memory of the node. Default 0.3. */
    utilizationBelow: z.number().min(0).max(1).default(0.3),
    headroom: z.number().min(1).default(1.2),
    /** Never release below this many nodes. Default 1. */
    minNodes: z.number().int().nonnegative().default(1),
  })
  .strict();

export const Policy = z.discriminatedUnion('kind', [IdlePolicy, SpotEvictionPolicy, RebalancePolicy, RightsizePolicy, ConsolidatePolicy]);
export type Policy = z.infer<typeof Policy> & { name: string };
export type PolicyKind = Policy['kind'];

const Day = z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']);
const ClockTime = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'HH:MM');

/** Limits every voluntary policy respects (spot eviction is exempt: the cloud does not wait). */
export const Guards = z
  .object({
    kind: z.literal('guards'),
    budgets: z
      .object({
        /** Operations at once per node. Default 2. */
        perNode: z.number().int().nonnegative().default(2),
        /** Operations at once overall. Default 10. */
        total: z.number().int().nonnegative().default(10),
      })
      .strict()
      .default({ perNode: 2, total: 10 }),
    /** A session is left alone this long after hubshift last moved it. Default 30m. */
    cooldown: Duration.default(1_800_000),
    /** Windows when the listed policies do nothing. */
    quietHours: z
      .array(z.object({ days: z.array(Day).min(1), start: ClockTime, end: ClockTime, timezone: TimeZone.default('UTC') }).strict())
      .default([]),
    quietHoursApplyTo: z.array(z.enum(['idle', 'rebalance', 'rightsize', 'consolidate'])).default(['rightsize', 'consolidate']),
  })
  .strict();
export type Guards = z.infer<typeof Guards>;

export const DEFAULT_GUARDS: Guards = Guards.parse({ kind: 'guards' });

export interface PolicySet {
  policies: Policy[];
  guards: Guards;
}
