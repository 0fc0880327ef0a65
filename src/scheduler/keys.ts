/**
 * Every Redis key the control plane writes. Keys of one session carry the
 * hash tag {s:ID}, so they share a Redis Cluster slot and one Lua script can
 * read and change them together; the same for a node's ({n:NAME}) and an
 * operation's ({o:ID}). The few indexes are single keys of their own.
 */
export const keys = {
  /** Set of registered node names. */
  nodes: 'hs:nodes',
  node: (name: string) => `hs:{n:${name}}:node`,
  /** Claim on a node (release): the operation id. */
  nodeOp: (name: string) => `hs:{n:${name}}:op`,
  /** Sorted set: the steps moving or checkpointing a session off the node now, each scored by its lease's end (ms). */
  nodeLanes: (name: string) => `hs:{n:${name}}:lanes`,
  /** Sorted set: the steps waiting for a lane off the node, scored by their turn; a hash of when each last asked; the turn counter. */
  nodeLaneQueue: (name: string) => `hs:{n:${name}}:lanequeue`,
  nodeLaneSeen: (name: string) => `hs:{n:${name}}:laneseen`,
  nodeLaneTurn: (name: string) => `hs:{n:${name}}:laneturn`,
  /** Hash: EC2 instance id to node name (EventBridge notices name instances). */
  instances: 'hs:instances',
  /** Set of known session ids. */
  sessions: 'hs:sessions',
  /** Hash: json (the SessionRecord) and node (for Lua checks). */
  session: (id: string) => `hs:{s:${id}}:session`,
  /** Set for a while after a session is removed: a push already under way must not bring it back. */
  removed: (id: string) => `hs:{s:${id}}:removed`,
  /** List of UsageSample JSON, newest first, trimmed to the retention. */
  samples: (id: string) => `hs:{s:${id}}:samples`,
  /** List of CheckpointRecord JSON, newest first, capped. */
  checkpoints: (id: string) => `hs:{s:${id}}:checkpoints`,
  /** Claim on a session: the id of the one operation planned or running on it. */
  op: (id: string) => `hs:{s:${id}}:op`,
  /** The session's lock (owner) and its fencing counter. */
  lock: (id: string) => `hs:{s:${id}}:lock`,
  fence: (id: string) => `hs:{s:${id}}:fence`,
  /** Hash: hub URL prefix (/user/NAME/) to the session id the gateway sends it to. */
  routes: 'hs:routes',
  /** Hash: subject (session id or node:NAME) to the Operation JSON in flight. */
  inflight: 'hs:inflight',
  /** Hash: notice id to NoticeInfo JSON. */
  notices: 'hs:notices',
  /** List of ActionRecord JSON, newest first, capped. */
  actions: 'hs:actions',
  /** Hash: scheduled policy name to its last run (ISO time). */
  lastRuns: 'hs:lastruns',
  /** List of LedgerMinute JSON, newest first, capped (a few days). */
  ledgerMinutes: 'hs:ledger:minutes',
  /** Set for an hour once a minute is recorded: with several schedulers, one records it. */
  ledgerClaim: (minute: string) => `hs:ledger:claim:${minute}`,
  /** Hash of a day's sums (t|FIELD, p|POLICY, n|NODE, u|USER|FIELD, g|GROUP|FIELD), added to with HINCRBYFLOAT. */
  ledgerDay: (date: string) => `hs:ledger:day:${date}`,
  /** Set of the days the ledger has. */
  ledgerDays: 'hs:ledger:days',
  /** Hash: session id to the most memory it was seen to hold. */
  ledgerPeak: 'hs:ledger:peak',
  /** Hash: step name to its result JSON, so a retried step knows what is done. */
  steps: (opId: string) => `hs:{o:${opId}}:steps`,
} as const;

/** BullMQ's prefix: one hash tag for every queue key, as BullMQ needs on a Redis Cluster. */
export const QUEUE_PREFIX = '{hubshift}';
export const OPS_QUEUE = 'ops';
