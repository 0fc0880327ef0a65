import { movesAtOnceOf, soonestLane } from '../../core/moves-at-once.js';
import type { Decision } from '../../core/decision.js';
import { checkpointDecision, gib, migrateDecision } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import type { Policy } from '../policy-schema.js';

type SpotEviction = Extract<Policy, { kind: 'spot-eviction' }>;

/**
 * Every session off a node before its interruption deadline: smallest first
 * (the most sessions out in the time), moved to the cheapest node with room
 * while the estimated moves and the checkpoints of the sessions after them
 * fit before the deadline less the margin; the rest checkpointed to the store
 * (faster than a move here). They leave as many at once as the node's agent
 * registered (its lanes), each as soon as one is free. Forced: budgets,
 * cooldown, quiet hours and busy kernels do not hold it back.
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
    const checkpointSeconds = sessions.map((s) => p.checkpointFixedSeconds + s.rssBytes / p.checkpointBytesPerSecond);
    // When each of the node's lanes is next free, in seconds from now: the workers run its sessions in this order,
    // each as soon as a lane is (scheduler/node-lanes.ts).
    const lanes = new Array<number>(movesAtOnceOf(node)).fill(0);
    for (const [i, s] of sessions.entries()) {
      const moveSeconds = p.moveFixedSeconds + s.rssBytes / p.moveBytesPerSecond;
      const lane = soonestLane(lanes);
      const moved = lanes.with(lane, lanes[lane]! + moveSeconds);
      // A move is planned only if the sessions after it can still all be checkpointed in time.
      const needed = allDoneAt(moved, checkpointSeconds.slice(i + 1));
      const inTime = needed <= usable;
      const target = inTime ? ctx.place(s.rssBytes, p.headroom, new Set([node.name])) : null;
      ctx.claim(s, { forced: true });
      const when = `spot interruption (${notice.action ?? 'terminate'}) of ${node.name} at ${notice.deadline}`;
      if (target) {
        lanes[lane] = moved[lane]!;
        const atOnce = lanes.length > 1 ? `, ${lanes.length} at once off the node` : '';
        out.push(
          migrateDecision({
            policy: p.name,
            s,
            source: node,
            target,
            deadline: notice.deadline,
            // The move alone must still end before the margin: past this, checkpointing is the faster way out.
            startBy: new Date(ctx.now.getTime() + (usable - moveSeconds) * 1000).toISOString(),
            reason: `${when}: moving ${gib(s.rssBytes)} to ${target.name} takes about ${moveSeconds.toFixed(0)} s, done by ${lanes[lane]!.toFixed(0)} s of ${leftSeconds.toFixed(0)} s left${atOnce}`,
          }),
        );
      } else {
        const why = inTime
          ? `no node has room for ${gib(s.rssBytes)}`
          : `too close to the deadline for a move (about ${needed.toFixed(0)} s needed with the checkpoints after it, ${usable.toFixed(0)} s usable)`;
        out.push(checkpointDecision({ policy: p.name, s, source: node, deadline: notice.deadline, reason: `${when}: ${why}, so checkpointing to the store` }));
        lanes[lane] = lanes[lane]! + checkpointSeconds[i]!;
      }
    }
  }
  return out;
}

/** When the last of `jobs` (seconds each, in order) ends, each run on the lane free soonest after `lanes`. */
function allDoneAt(lanes: readonly number[], jobs: readonly number[]): number {
  const free = [...lanes];
  for (const seconds of jobs) {
    const lane = soonestLane(free);
    free[lane] = free[lane]! + seconds;
  }
  return Math.max(...free);
}
