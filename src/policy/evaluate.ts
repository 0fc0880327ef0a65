import type { ClusterSnapshot } from '../core/cluster.js';
import type { Decision } from '../core/decision.js';
import { EvaluationContext } from './evaluation-context.js';
import { consolidate } from './methods/consolidate.js';
import { idle } from './methods/idle.js';
import { rebalance } from './methods/rebalance.js';
import { rightsize } from './methods/rightsize.js';
import { spotEviction } from './methods/spot-eviction.js';
import type { Policy, PolicyKind, PolicySet } from './policy-schema.js';

/**
 * The order methods run in: what the cloud forces first (it claims sessions
 * and room before anything voluntary), then preparation, then savings from
 * the cheapest disruption (idle) to the dearest (moving running sessions).
 */
export const METHOD_ORDER: readonly PolicyKind[] = ['spot-eviction', 'rebalance', 'idle', 'rightsize', 'consolidate'];

function run(ctx: EvaluationContext, p: Policy): Decision[] {
  switch (p.kind) {
    case 'spot-eviction':
      return spotEviction(ctx, p);
    case 'rebalance':
      return rebalance(ctx, p);
    case 'idle':
      return idle(ctx, p);
    case 'rightsize':
      return rightsize(ctx, p);
    case 'consolidate':
      return consolidate(ctx, p);
  }
}

/**
 * The policy engine: a pure function of the cluster's snapshot, the policies
 * and the time. Each decision carries the policy that made it, its reason and
 * its estimated cost effect. At most one decision per session per pass.
 */
export function evaluate(snapshot: ClusterSnapshot, set: PolicySet, now: Date): Decision[] {
  const ctx = new EvaluationContext(snapshot, set.guards, now);
  const out: Decision[] = [];
  for (const kind of METHOD_ORDER) {
    // A loop, not push(...): spread into arguments, the decisions of one method overflow the stack past some 125k.
    for (const p of set.policies) if (p.kind === kind && p.enabled) for (const d of run(ctx, p)) out.push(d);
  }
  return out;
}
