import { z } from 'zod';
import { Lifecycle, NodeInfo } from './cluster.js';
import { Decision, DecisionAction } from './decision.js';
import { SessionId, SessionState, UserName } from './session.js';

/**
 * The control plane's wire and storage shapes: what agents send the
 * scheduler, what the scheduler keeps in Redis, what its API serves.
 */

const IsoTime = z.string().datetime({ offset: true });
const HttpUrl = z.string().url().refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL');

/**
 * Sent by an agent when it starts (and again whenever the scheduler has forgotten it).
 * Not strict: fields this scheduler does not know are dropped and named back in
 * the answer (`ignoredFields`), so that agents can be upgraded before their scheduler.
 */
export const NodeRegistration = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/, 'node name must be 1-63 of a-z 0-9 . - and start with a letter or digit'),
    instanceId: z.string().min(1).max(64),
    instanceType: z.string().min(1).max(64),
    zone: z.string().min(1).max(64),
    lifecycle: Lifecycle,
    pricePerHour: z.number().nonnegative().max(1000),
    memoryBytes: z.number().int().positive(),
    cpus: z.number().positive(),
    /** Sessions it sends off at once (see NodeInfo). */
    movesAtOnce: NodeInfo.shape.movesAtOnce,
    /** The link its sizes come from (see NodeInfo). */
    networkGbps: NodeInfo.shape.networkGbps,
    /** Where the scheduler's workers reach this node's agent, and with what token. */
    agentUrl: HttpUrl,
    agentToken: z.string().min(16),
  });
export type NodeRegistration = z.infer<typeof NodeRegistration>;

/** A node as the scheduler keeps it: what the policies see plus how to reach its agent. */
export const NodeRecord = NodeInfo.extend({
  agentUrl: HttpUrl,
  agentToken: z.string(),
  lastSeenAt: IsoTime,
});
export type NodeRecord = z.infer<typeof NodeRecord>;

/** What an agent and the scheduler both say of a running session. */
const SessionFacts = z.object({
  id: SessionId,
  user: UserName,
  state: SessionState,
  url: z.string(),
  token: z.string(),
  rssBytes: z.number().int().nonnegative(),
  /** Cores used since the agent's previous sample. */
  cpuCores: z.number().nonnegative(),
  busy: z.boolean(),
  connections: z.number().int().nonnegative(),
  lastCheckpoint: z.string().nullable(),
});

/** One session as an agent reports it in a metrics push. Not strict, like NodeRegistration: a newer agent's extra fields are dropped. */
export const SessionReport = SessionFacts.extend({ lastActivityAt: IsoTime.nullable() });
export type SessionReport = z.infer<typeof SessionReport>;

export const MetricsPush = z.object({ at: IsoTime, sessions: z.array(SessionReport).max(10_000) });
export type MetricsPush = z.infer<typeof MetricsPush>;

/** How JupyterHub reaches a session: its hub user, server name ('' for the default) and URL prefix. */
export const HubRoute = z.object({
  user: z.string().min(1),
  server: z.string(),
  /** /user/NAME/ (under the hub's base URL): the gateway sends what starts with it here. */
  prefix: z.string().regex(/^\/(?:[^/?#]+\/)+$/, 'is not a URL path prefix like /user/NAME/'),
});
export type HubRoute = z.infer<typeof HubRoute>;

/**
 * The route prefixes a request path could belong to, longest first: a named
 * server's /user/ann/lab/ wins over the default server's /user/ann/.
 */
export function routePrefixes(path: string): string[] {
  const parts = path.split('?')[0]!.split('/');
  const prefixes: string[] = [];
  for (let i = parts.length - 1; i >= 2; i--) prefixes.push(`${parts.slice(0, i).join('/')}/`);
  return prefixes;
}

/**
 * A session that went with a node the cloud took and is back at its last
 * checkpoint: what it did after that checkpoint is lost, which its user is
 * told while it wakes. Cleared once it runs again.
 */
export const LostWithNode = z.object({
  node: z.string(),
  /** When the scheduler concluded the node was gone. */
  at: IsoTime,
  checkpoint: z.string(),
  /** When that checkpoint was taken, where the scheduler recorded it. */
  checkpointAt: IsoTime.nullable(),
});
export type LostWithNode = z.infer<typeof LostWithNode>;

/** A session as the scheduler knows it. */
export const SessionRecord = SessionFacts.extend({
  /** Set for sessions JupyterHub started through the scheduler. */
  hub: HubRoute.nullable().default(null),
  /** The user's group for the cost ledger (the hub's first group of the user), if known. */
  group: z.string().max(128).nullable().default(null),
  /** Memory the session asked for (JupyterHub's mem_limit), if it did. */
  requestedBytes: z.number().int().positive().nullable().default(null),
  /** Where it runs; null while it is only in the store. */
  node: z.string().nullable(),
  lastActivityAt: IsoTime,
  lastDisruptionAt: IsoTime.nullable(),
  updatedAt: IsoTime,
  lostWithNode: LostWithNode.nullable().default(null),
});
export type SessionRecord = z.infer<typeof SessionRecord>;

/** hubshift's own notice shape: what `hubshift notice` and an agent's metadata watcher post. */
export const NoticeRequest = z
  .object({
    node: z.string().min(1),
    action: z.enum(['terminate', 'stop', 'hibernate', 'rebalance']),
    /** Seconds until the node goes (interruptions; default 120, the spot notice). */
    in: z.number().nonnegative().max(86_400).optional(),
    /** Or the time it goes, as the metadata service gives it. */
    time: IsoTime.optional(),
    id: z.string().min(1).max(128).optional(),
  })
  .strict();
export type NoticeRequest = z.infer<typeof NoticeRequest>;

/**
 * EC2's events as EventBridge delivers them (documented shapes:
 * "EC2 Spot Instance Interruption Warning" and "EC2 Instance Rebalance Recommendation").
 */
export const EventBridgeNotice = z.discriminatedUnion('detail-type', [
  z.object({
    'detail-type': z.literal('EC2 Spot Instance Interruption Warning'),
    id: z.string().min(1),
    source: z.literal('aws.ec2'),
    time: IsoTime,
    detail: z.object({ 'instance-id': z.string().min(1), 'instance-action': z.enum(['terminate', 'stop', 'hibernate']) }),
  }),
  z.object({
    'detail-type': z.literal('EC2 Instance Rebalance Recommendation'),
    id: z.string().min(1),
    source: z.literal('aws.ec2'),
    time: IsoTime,
    detail: z.object({ 'instance-id': z.string().min(1) }),
  }),
]);
export type EventBridgeNotice = z.infer<typeof EventBridgeNotice>;

/** What a job (one operation: a checkpoint, a restore, a migration) acts on and why. */
export const OperationKind = z.enum(['checkpoint', 'snapshot', 'restore', 'migrate', 'release-node']);
export type OperationKind = z.infer<typeof OperationKind>;

export const Operation = z.object({
  id: z.string().min(1),
  kind: OperationKind,
  sessionId: SessionId.nullable(),
  source: z.string().nullable(),
  target: z.string().nullable(),
  /** The session's last checkpoint when the operation was planned: a step that finds a newer one knows it already ran. */
  baseCheckpoint: z.string().nullable(),
  decision: Decision,
  createdAt: IsoTime,
});
export type Operation = z.infer<typeof Operation>;

export const JobStep = z.enum(['checkpoint', 'restore', 'move', 'finish', 'release']);
export type JobStep = z.infer<typeof JobStep>;

/** The payload of one BullMQ job: a step of an operation. */
export const JobData = z.object({ op: Operation, step: JobStep });
export type JobData = z.infer<typeof JobData>;

export const JobView = z.object({
  id: z.string(),
  operation: z.string(),
  kind: OperationKind,
  step: JobStep,
  sessionId: z.string().nullable(),
  source: z.string().nullable(),
  target: z.string().nullable(),
  policy: z.string(),
  reason: z.string(),
  state: z.string(),
  attemptsMade: z.number(),
  failedReason: z.string().nullable(),
  result: z.unknown(),
  createdAt: IsoTime,
  finishedAt: IsoTime.nullable(),
});
export type JobView = z.infer<typeof JobView>;

/** One entry of the action log: every operation planned, done or failed, with its reason. */
export const ActionRecord = Decision.pick({ sessionId: true, source: true, target: true, policy: true, reason: true, costPerHour: true }).extend({
  at: IsoTime,
  operation: z.string(),
  action: DecisionAction.or(z.literal('restore')),
  outcome: z.enum(['planned', 'done', 'failed']),
  detail: z.string().nullable(),
});
export type ActionRecord = z.infer<typeof ActionRecord>;

/** A session placed by the scheduler, as `hubshift session show --scheduler` prints it. */
export const PlacedSession = z.object({
  id: z.string(),
  user: z.string(),
  node: z.string().nullable(),
  state: SessionState,
  url: z.string(),
  token: z.string(),
  lastCheckpoint: z.string().nullable(),
  /** The operation under way on it, if any. */
  operation: z.string().nullable(),
  hub: HubRoute.nullable().default(null),
  lostWithNode: LostWithNode.nullable().default(null),
});
export type PlacedSession = z.infer<typeof PlacedSession>;

/** A checkpoint of a session, as the scheduler keeps it (the store holds the images and the manifest). */
export const CheckpointRecord = z.object({
  checkpoint: z.string(),
  sessionId: SessionId,
  node: z.string(),
  at: IsoTime,
  /** The operation that made it. */
  operation: z.string(),
  leftRunning: z.boolean(),
});
export type CheckpointRecord = z.infer<typeof CheckpointRecord>;

/** What became of each session a notice concerned: the evacuation's report. */
export const EvacuationReport = z.object({
  notice: z.object({ id: z.string(), node: z.string(), kind: z.string(), deadline: IsoTime.nullable(), receivedAt: IsoTime }),
  sessions: z.array(
    z.object({
      sessionId: z.string(),
      action: z.string(),
      /** planned: still under way; done; failed (see detail). */
      outcome: z.enum(['planned', 'done', 'failed']),
      /**
       * Where a planned one stands at the node's lanes (sessions leave a node a
       * few at a time): leaving (it holds a lane: moving or checkpointing now),
       * waiting (`turn` 1 is next); null when its step has not asked for a lane
       * yet (its job is queued) or it is no longer planned.
       */
      lane: z.object({ state: z.enum(['leaving', 'waiting']), turn: z.number().int().positive().nullable() }).nullable(),
      target: z.string().nullable(),
      at: IsoTime,
      /** Seconds before the deadline it was done (negative: after). */
      marginSeconds: z.number().nullable(),
      detail: z.string().nullable(),
    }),
  ),
  /** Sessions still on the node that no operation has taken. */
  left: z.array(z.string()),
});
export type EvacuationReport = z.infer<typeof EvacuationReport>;
