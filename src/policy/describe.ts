import type { NodeInfo, SessionSnapshot } from '../core/cluster.js';
import type { Decision } from '../core/decision.js';
import { sessionShareCostPerHour, storeCostPerHour } from '../pricing/session-cost.js';

export const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 2 : 1)} GiB`;
export const usd = (perHour: number): string => `$${Math.abs(perHour).toFixed(4)}/h`;
/** A duration in words a reader takes in at once: seconds under two minutes, minutes under two hours, then hours. */
export const span = (ms: number): string =>
  ms < 120_000 ? `${Math.round(ms / 1000)} s` : ms < 7_200_000 ? `${Math.round(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`;

/** A decision with the fields most methods leave at their defaults. */
export function decision(d: Pick<Decision, 'action' | 'policy' | 'reason' | 'costPerHour'> & Partial<Decision>): Decision {
  return { sessionId: null, source: null, target: null, deadline: null, ...d };
}

interface About {
  policy: string;
  s: SessionSnapshot;
  source: NodeInfo;
  reason: string;
  deadline?: string | null;
}

/** Move a running session; its cost effect is its share of the target's price less its share of the source's. */
export function migrateDecision(a: About & { target: NodeInfo; startBy?: string }): Decision {
  return decision({
    ...(a.startBy ? { startBy: a.startBy } : {}),
    action: 'migrate',
    policy: a.policy,
    sessionId: a.s.id,
    source: a.source.name,
    target: a.target.name,
    reason: a.reason,
    deadline: a.deadline ?? null,
    costPerHour: sessionShareCostPerHour(a.target, a.s.rssBytes) - sessionShareCostPerHour(a.source, a.s.rssBytes),
  });
}

/** Checkpoint to the store and stop; its cost effect is the store's price less the session's share of its node. */
export function checkpointDecision(a: About): Decision {
  return decision({
    action: 'checkpoint',
    policy: a.policy,
    sessionId: a.s.id,
    source: a.source.name,
    reason: a.reason,
    deadline: a.deadline ?? null,
    costPerHour: storeCostPerHour(a.s.rssBytes) - sessionShareCostPerHour(a.source, a.s.rssBytes),
  });
}
