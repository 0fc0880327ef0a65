import { z } from 'zod';
import { MAX_MOVES_AT_ONCE } from './moves-at-once.js';
import { SessionState } from './session.js';

export const Lifecycle = z.enum(['spot', 'on-demand']);
export type Lifecycle = z.infer<typeof Lifecycle>;

const IsoTime = z.string().datetime({ offset: true });

/** A machine that runs an agent, as it registered with the scheduler. */
export const NodeInfo = z.object({
  name: z.string().min(1).max(63),
  instanceId: z.string().min(1),
  instanceType: z.string().min(1),
  zone: z.string().min(1),
  lifecycle: Lifecycle,
  /** What the node costs now, USD per hour. */
  pricePerHour: z.number().nonnegative(),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().positive(),
  /**
   * Sessions its agent sends off at once (moves and checkpoints off it, the
   * node's lanes), as the agent registered it from its cores and link
   * (`hubshift agent --moves-at-once`). Absent where the agent said nothing.
   */
  movesAtOnce: z.number().int().min(1).max(MAX_MOVES_AT_ONCE).optional(),
  /**
   * The link its agent declared or read off EC2's description of its type
   * (`hubshift agent --network-gbps`), Gbit/s: what its moves at once and its
   * S3 transfers were sized from. Absent where the agent said nothing.
   */
  networkGbps: z.number().positive().max(10_000).optional(),
  /**
   * cordoned: takes no new sessions (being emptied or about to go). silent:
   * its agent has not been heard from for a while (its instance may be gone):
   * nothing is placed on it until it is; the scheduler works that out from
   * when it last heard, and never stores it.
   */
  state: z.enum(['ready', 'cordoned', 'silent']).default('ready'),
  registeredAt: IsoTime,
});
export type NodeInfo = z.infer<typeof NodeInfo>;

/** An instance type the cloud offers, for right-sizing toward a cheaper fit. */
export const InstanceTypeInfo = z.object({
  name: z.string().min(1),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().positive(),
  onDemandPricePerHour: z.number().nonnegative(),
  spotPricePerHour: z.number().nonnegative().nullable(),
});
export type InstanceTypeInfo = z.infer<typeof InstanceTypeInfo>;

/** A spot interruption (with its deadline) or a rebalance recommendation for a node. */
export const NoticeInfo = z.object({
  id: z.string().min(1),
  node: z.string().min(1),
  kind: z.enum(['interruption', 'rebalance']),
  /** For interruptions: what the cloud will do at the deadline. */
  action: z.enum(['terminate', 'stop', 'hibernate']).nullable(),
  /** When the node goes (interruptions); null for rebalance recommendations. */
  deadline: IsoTime.nullable(),
  receivedAt: IsoTime,
});
export type NoticeInfo = z.infer<typeof NoticeInfo>;

export const UsageSample = z.object({
  at: IsoTime,
  rssBytes: z.number().int().nonnegative(),
  /** Cores in use over the interval before `at`. */
  cpuCores: z.number().nonnegative(),
});
export type UsageSample = z.infer<typeof UsageSample>;

/** What the policies see of one session. */
export const SessionSnapshot = z.object({
  id: z.string(),
  user: z.string(),
  /** Where it runs; null when it is in the store. */
  node: z.string().nullable(),
  state: SessionState,
  rssBytes: z.number().int().nonnegative(),
  cpuCores: z.number().nonnegative(),
  /** Any kernel executing now. */
  busy: z.boolean(),
  /** Open client connections (browser tabs, websockets). */
  connections: z.number().int().nonnegative(),
  lastActivityAt: IsoTime,
  /** The last time hubshift moved or checkpointed it (cooldown). */
  lastDisruptionAt: IsoTime.nullable(),
  /** Recent samples, oldest first, bounded by the state store's retention. */
  samples: z.array(UsageSample),
});
export type SessionSnapshot = z.infer<typeof SessionSnapshot>;

/** An operation already queued or running: it counts against budgets, and its session is left alone. */
export const InFlightOperation = z.object({
  sessionId: z.string().nullable(),
  node: z.string().nullable(),
  action: z.string(),
});
export type InFlightOperation = z.infer<typeof InFlightOperation>;

/** Everything a policy evaluation needs: the evaluator reads nothing else. */
export const ClusterSnapshot = z.object({
  nodes: z.array(NodeInfo),
  sessions: z.array(SessionSnapshot),
  notices: z.array(NoticeInfo),
  inFlight: z.array(InFlightOperation),
  instanceTypes: z.array(InstanceTypeInfo),
  /** When each scheduled policy last ran (by policy name). */
  lastRuns: z.record(z.string(), IsoTime),
});
export type ClusterSnapshot = z.infer<typeof ClusterSnapshot>;
