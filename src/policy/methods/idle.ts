import type { Decision } from '../../core/decision.js';
import { checkpointDecision, gib, span } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import type { Policy } from '../policy-schema.js';

type Idle = Extract<Policy, { kind: 'idle' }>;

/** Checkpoint a session nobody uses: no kernel busy, no connection open, CPU under the threshold, for idleFor. */
export function idle(ctx: EvaluationContext, p: Idle): Decision[] {
  const out: Decision[] = [];
  for (const s of ctx.snapshot.sessions) {
    if (s.state !== 'running' || s.node === null) continue;
    const node = ctx.nodes.get(s.node);
    if (!node) continue;
    const idleMs = ctx.now.getTime() - Date.parse(s.lastActivityAt);
    if (idleMs < p.idleFor || s.connections > 0 || s.cpuCores >= p.cpuBelow) continue;
    if (!ctx.mayDisrupt(s, 'idle').ok) continue;
    ctx.claim(s, { forced: false });
    out.push(
      checkpointDecision({
        policy: p.name,
        s,
        source: node,
        reason: `idle for ${span(idleMs)} (no kernel busy, no connection, ${s.cpuCores.toFixed(3)} cores): checkpointing ${gib(s.rssBytes)} to the store until it is next used`,
      }),
    );
  }
  return out;
}
