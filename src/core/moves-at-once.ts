/**
 * How many sessions a node sends off at once (moves and checkpoints off it:
 * the scheduler's lanes for the node, and the spot-eviction planner's
 * timing), where its operator does not say (`--moves-at-once`).
 *
 * A move keeps about a core of its source busy (criu's dump, the agent's
 * stream) and pushes about 1 GB/s here, 8 Gbit/s. More at once than the
 * cores or the link carry only share them: four at once on this 2-core VM
 * left each session frozen 3-5 s against 1.1-1.2 s alone, the batch no
 * sooner done (scheduler/node-lanes.ts). So one for every two cores and
 * every 8 Gbit/s of the link, the fewer of the two, and at least one. The
 * node's agent registers it (`hubshift agent --moves-at-once`); the
 * spot-eviction planner and the scheduler's lanes read it (movesAtOnceOf).
 */
export const CORES_PER_MOVE = 2;
export const GBPS_PER_MOVE = 8;
/** The link an agent assumes when it is neither told nor can learn it (`hubshift agent --network-gbps`), Gbit/s. */
export const ASSUMED_NETWORK_GBPS = 10;
/** A bound on what a node may register (cluster.ts: NodeInfo, control.ts: NodeRegistration). */
export const MAX_MOVES_AT_ONCE = 64;

export function defaultMovesAtOnce(node: { cores: number; networkGbps: number }): number {
  const byCores = Math.floor(node.cores / CORES_PER_MOVE);
  const byLink = Math.floor(node.networkGbps / GBPS_PER_MOVE);
  return Math.min(MAX_MOVES_AT_ONCE, Math.max(1, Math.min(byCores, byLink)));
}

/**
 * Of a node's lanes, given when each is next free, the one free soonest (the
 * first of equals): where the workers' next operation off it runs, as the
 * spot-eviction planner and the simulator count it.
 */
export function soonestLane(freeAt: readonly number[]): number {
  return freeAt.indexOf(Math.min(...freeAt));
}

/** How many sessions leave a node at once: what its agent registered, else `fallback`. */
export function movesAtOnceOf(node: { movesAtOnce?: number }, fallback = 1): number {
  return node.movesAtOnce ?? fallback;
}
