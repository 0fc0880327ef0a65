import type { Decision } from '../../core/decision.js';
import { checkpointDecision, gib, migrateDecision } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import type { Policy } from '../policy-schema.js';

type SpotEviction = Extract<Policy, { kind: 'spot-eviction' }>;

/**
 * Every session off a node before its interruption deadline: smallest first
 * (the most sessions out in the time), moved to the cheapest node with room
 * while the estimated moves, one after another, and the checkpoints of the
 * sessions after them fit before the deadline less the margin; the rest
 * checkpointed to the store (faster than a move here). Forced: budgets, cooldown,
 * quiet hours and busy kernels do not hold it back.
 */
export function spotEviction(ctx: EvaluationContext, p: SpotEviction): Decision[] {
  const out: Decision[] = [];
  for (const notice of ctx.snapshot.notices) {
    if (notice.kind !== 'interruption' || notice.deadline === null) continue;
    const node = ctx.nodes.get(notice.node);
    if (!node) continue; // a notice for a node hubshift does not run: nothing of ours is on it
    const leftSeconds = (Date.parse(notice.deadline) - ctx.now.getTime()) / 1000;
    if (leftSeconds <= 0) continue;
    const usable = leftSeconds - p.safetyMargin / 1000;
    const sessions = (ctx.sessionsByNode.get(node.name) ?? [])
      .filter((s) => s.state === 'running' && !ctx.isSettled(s.id))
      .sort((a, b) => a.rssBytes - b.rssBytes || a.id.localeCompare(b.id));
    // Checkpoint time of the sessions after each one: a move is planned only if what follows can still be checkpointed in time.
    const checkpointSeconds = (s: { rssBytes: number }): number => p.checkpointFixedSeconds + s.rssBytes / p.checkpointBytesPerSecond;
    const rest: number[] = new Array<number>(sessions.length + 1).fill(0);
    for (let i = sessions.length - 1; i >= 0; i--) rest[i] = rest[i + 1]! + checkpointSeconds(sessions[i]!);
    let planned = 0;
    for (const [i, s] of sessions.entries()) {
      const moveSeconds = p.moveFixedSeconds + s.rssBytes / p.moveBytesPerSecond;
      const inTime = planned + moveSeconds + rest[i + 1]! <= usable;
      const target = inTime ? ctx.place(s.rssBytes, p.headroom, new Set([node.name])) : null;
      ctx.claim(s, { forced: true });
      const when = `spot interruption (${notice.action ?? 'terminate'}) of ${node.name} at ${notice.deadline}`;
      if (target) {
        planned += moveSeconds;
        out.push(
          migrateDecision({
            policy: p.name,
            s,
            source: node,
            target,
            deadline: notice.deadline,
            reason: `${when}: moving ${gib(s.rssBytes)} to ${target.name} takes about ${moveSeconds.toFixed(0)} s, done by ${(planned).toFixed(0)} s of ${leftSeconds.toFixed(0)} s left`,
          }),
        );
      } else {
        const why = inTime
          ? `no node has room for ${gib(s.rssBytes)}`
          : `too close to the deadline for a move (about ${(planned + moveSeconds + rest[i + 1]!).toFixed(0)} s needed with the checkpoints after it, ${usable.toFixed(0)} s usable)`;
        out.push(checkpointDecision({ policy: p.name, s, source: node, deadline: notice.deadline, reason: `${when}: ${why}, so checkpointing to the store` }));
        planned += checkpointSeconds(s);
      }
    }
  }
  return out;
}
