import type { Decision } from '../../core/decision.js';
import { storeCostPerHour } from '../../pricing/session-cost.js';
import { decision } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import type { Policy } from '../policy-schema.js';

type Rebalance = Extract<Policy, { kind: 'rebalance' }>;

/**
 * A rebalance recommendation says a node is at raised risk: prepare without
 * moving. A snapshot (checkpoint, left running) makes a later eviction a
 * restore instead of a race. The cooldown keeps it to once per session.
 */
export function rebalance(ctx: EvaluationContext, p: Rebalance): Decision[] {
  if (p.prepare === 'none') return [];
  const out: Decision[] = [];
  for (const notice of ctx.snapshot.notices) {
    if (notice.kind !== 'rebalance' || !ctx.nodes.has(notice.node)) continue;
    for (const s of ctx.sessionsByNode.get(notice.node) ?? []) {
      if (s.state !== 'running' || !ctx.mayDisrupt(s, 'rebalance').ok) continue;
      ctx.claim(s, { forced: false });
      out.push(
        decision({
          action: 'snapshot',
          policy: p.name,
          sessionId: s.id,
          source: notice.node,
          reason: `rebalance recommendation for ${notice.node} (received ${notice.receivedAt}): snapshot, left running, so an interruption can be met by a restore`,
          costPerHour: storeCostPerHour(s.rssBytes),
        }),
      );
    }
  }
  return out;
}
