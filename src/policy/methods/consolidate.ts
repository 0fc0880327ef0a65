import type { NodeInfo, SessionSnapshot } from '../../core/cluster.js';
import type { Decision } from '../../core/decision.js';
import { decision, migrateDecision, usd } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import type { Policy } from '../policy-schema.js';
import { scheduleFired } from '../schedule.js';

type Consolidate = Extract<Policy, { kind: 'consolidate' }>;

/**
 * Nodes used below the threshold, least used first: when every session on
 * one fits elsewhere (and the budgets allow moving them all), they move and
 * the node is released. Never below minNodes ready nodes.
 */
export function consolidate(ctx: EvaluationContext, p: Consolidate): Decision[] {
  if (p.schedule && !scheduleFired(p.schedule, p.timezone, ctx.snapshot.lastRuns[p.name], ctx.now)) return [];
  if (ctx.quiet('consolidate')) return [];
  const out: Decision[] = [];
  const ready = [...ctx.nodes.values()].filter((n) => n.state === 'ready' && !ctx.noticed.has(n.name));
  let releasable = ready.length - p.minNodes;
  const utilization = (n: NodeInfo): number => ctx.usedBytes(n.name) / n.memoryBytes;
  for (const node of [...ready].sort((a, b) => utilization(a) - utilization(b) || b.pricePerHour - a.pricePerHour)) {
    if (releasable <= 0) break;
    const used = utilization(node);
    if (used >= p.utilizationBelow) continue;
    const sessions = (ctx.sessionsByNode.get(node.name) ?? []).filter((s) => s.state === 'running' || s.state === 'starting' || s.state === 'restoring');
    if (sessions.some((s) => !ctx.mayDisrupt(s, 'consolidate').ok) || !ctx.hasBudget(node.name, sessions.length).ok) continue;
    // Largest first, so the hardest to place decides early whether the node can be emptied.
    const moves: Array<{ s: SessionSnapshot; target: NodeInfo }> = [];
    for (const s of [...sessions].sort((a, b) => b.rssBytes - a.rssBytes)) {
      const target = ctx.place(s.rssBytes, p.headroom, new Set([node.name]));
      if (!target) break;
      moves.push({ s, target });
    }
    if (moves.length < sessions.length) {
      for (const m of moves) ctx.unreserve(m.target.name, m.s.rssBytes);
      continue;
    }
    ctx.empty(node.name);
    releasable -= 1;
    for (const { s, target } of moves) {
      ctx.claim(s, { forced: false });
      out.push(migrateDecision({ policy: p.name, s, source: node, target, reason: `emptying ${node.name} (${(used * 100).toFixed(0)} % of its memory in use) so it can be released` }));
    }
    out.push(
      decision({
        action: 'release-node',
        policy: p.name,
        source: node.name,
        reason: `${node.name} holds ${(used * 100).toFixed(0)} % of its memory in use${sessions.length ? ` and its ${sessions.length} session(s) fit elsewhere` : ' and no session'}: releasing it saves ${usd(node.pricePerHour)}`,
        costPerHour: -node.pricePerHour,
      }),
    );
  }
  return out;
}
