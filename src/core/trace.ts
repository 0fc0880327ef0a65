import { z } from 'zod';
import { UserName } from './session.js';

/**
 * A workload trace: JSON Lines, one object a line. The first line is the
 * header; every other line is an event of one user's server, in time order.
 * A `usage` line holds from its time until that user's next usage or stop
 * (a step function), so a trace needs a line only when something changes.
 */

const IsoTime = z.string().datetime({ offset: true });

export const TraceHeader = z
  .object({
    type: z.literal('header'),
    version: z.literal(1),
    /** The trace covers [start, end). */
    start: IsoTime,
    end: IsoTime,
    users: z.number().int().nonnegative(),
    /** How it was made (the generator's options and assumptions), free form. */
    generator: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();
export type TraceHeader = z.infer<typeof TraceHeader>;

/** A user's server starts (JupyterHub spawns it). */
export const TraceStart = z
  .object({
    type: z.literal('start'),
    at: IsoTime,
    user: UserName,
    group: z.string().min(1).max(128).nullable().default(null),
    /** Memory guaranteed to the server (JupyterHub's mem_guarantee), bytes. */
    requestedBytes: z.number().int().positive().nullable().default(null),
  })
  .strict();

/** What the server does from `at` until the user's next usage or stop. */
export const TraceUsage = z
  .object({
    type: z.literal('usage'),
    at: IsoTime,
    user: UserName,
    /** Memory the server and its kernels hold. */
    rssBytes: z.number().int().nonnegative(),
    /** Cores in use, on average. */
    cpuCores: z.number().nonnegative().max(1024),
    /** Share of the minutes in which a kernel is executing (0 to 1). */
    busy: z.number().min(0).max(1),
    /** Whether the person is working: their requests reach the server. */
    active: z.boolean(),
    /** Open browser tabs and websockets. */
    connections: z.number().int().nonnegative().max(10_000),
  })
  .strict();

/** The user stops their server (state given up). */
export const TraceStop = z.object({ type: z.literal('stop'), at: IsoTime, user: UserName }).strict();

export const TraceEvent = z.discriminatedUnion('type', [TraceStart, TraceUsage, TraceStop]);
export type TraceEvent = z.infer<typeof TraceEvent>;
export type TraceStartEvent = z.infer<typeof TraceStart>;
export type TraceUsageEvent = z.infer<typeof TraceUsage>;

export interface Trace {
  header: TraceHeader;
  /** In time order; times in epoch milliseconds alongside for the simulator. */
  events: Array<TraceEvent & { atMs: number }>;
}

/** One user-visible delay figure: how many, and their distribution in seconds. */
export const DelayStats = z.object({
  count: z.number().int().nonnegative(),
  p50: z.number().nonnegative(),
  p95: z.number().nonnegative(),
  max: z.number().nonnegative(),
  totalSeconds: z.number().nonnegative(),
});
export type DelayStats = z.infer<typeof DelayStats>;

/** What `hubshift simulate --json` prints. */
export const SimulationReport = z.object({
  trace: z.object({ start: IsoTime, end: IsoTime, users: z.number(), servers: z.number(), events: z.number() }),
  seed: z.number().int(),
  policies: z.array(z.string()),
  /** What hubshift would have paid, USD: nodes plus the checkpoint store. */
  cost: z.number(),
  costBreakdown: z.object({ nodesUsd: z.number(), storeUsd: z.number(), unusedCapacityUsd: z.number(), spotNodeHours: z.number(), onDemandNodeHours: z.number() }),
  /** What each baseline would have paid, USD. */
  baselines: z.object({ alwaysOnOnDemand: z.number(), idleCulling: z.number() }),
  /** Always-on on-demand cost over hubshift's cost. */
  ratio: z.number(),
  ratioToCulling: z.number(),
  /** Savings against always-on on-demand by the policy that caused them (unused capacity counts against). */
  savingsByPolicy: z.record(z.string(), z.number()),
  /** Servers whose state hubshift would have lost (a node reclaimed before they were out). */
  lostSessions: z.number().int().nonnegative(),
  /** Servers the culling baseline kills, their state lost. */
  culledByBaseline: z.number().int().nonnegative(),
  delays: z.object({
    /** A request to a checkpointed server until it answers (restore, and a node's boot when one had to be launched). */
    wakes: DelayStats,
    /** Moves of running servers: freeze to first answer on the target. */
    migrationDowntimes: DelayStats,
    /** New servers that waited for a node to boot. */
    startWaits: DelayStats,
  }),
  actions: z.record(z.string(), z.number().int().nonnegative()),
  spot: z.object({
    monthlyReclaimFraction: z.number(),
    priceFactor: z.number(),
    poolInterruptions: z.number().int().nonnegative(),
    nodesInterrupted: z.number().int().nonnegative(),
    spotNodesLaunched: z.number().int().nonnegative(),
    evacuated: z.object({ moved: z.number().int(), checkpointed: z.number().int(), lost: z.number().int() }),
  }),
  /** Node-minutes in which the sessions on a node held more memory than it has (they would have been OOM-killed or swapped). */
  overcommittedNodeMinutes: z.number().int().nonnegative(),
  timings: z.record(z.string(), z.number()),
});
export type SimulationReport = z.infer<typeof SimulationReport>;
