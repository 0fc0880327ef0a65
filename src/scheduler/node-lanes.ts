import { z } from 'zod';
import { InputError } from '../core/errors.js';
import { sleep } from '../util/exec.js';
import { keys } from './keys.js';
import type { RedisConnection } from './redis.js';

// A node's lanes: a sorted set, a member per step holding one, scored by its lease's end on Redis's own clock (the
// workers' clocks may disagree); expired leases (a worker that died) are dropped before counting. Steps waiting take
// turns in the order they first asked (the planner's order: smallest session first), in a second sorted set; a waiter
// that stopped asking for 3 s (its worker died; a live one asks every 100 ms) loses its turn. A holder asking again
// (its step retried) keeps its lane.
// KEYS: lanes, queue, seen, turn counter. ARGV: owner, lanes, lease ms, stale ms.
// Milliseconds on Redis's clock, as `now`.
const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

const TAKE = `
${NOW_MS}
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local function take()
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
  return 1
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return take() end
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local seen = tonumber(redis.call('HGET', KEYS[3], w) or '0')
  if w ~= ARGV[1] and now - seen > tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[2], w)
    redis.call('HDEL', KEYS[3], w)
  end
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1]) end
redis.call('HSET', KEYS[3], ARGV[1], now)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and redis.call('ZRANK', KEYS[2], ARGV[1]) < free then return take() end
return 0
`;

const RENEW = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
${NOW_MS}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
return 1
`;

// Who holds the node's lanes (leases not run out) and who waits for one, in turn (waiters that still ask).
// KEYS: lanes, queue, seen. ARGV: stale ms.
const STATE = `
${NOW_MS}
local waiting = {}
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if now - tonumber(redis.call('HGET', KEYS[3], w) or '0') <= tonumber(ARGV[1]) then table.insert(waiting, w) end
end
return { redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf'), waiting }
`;

/** A waiter that has not asked for this long (its worker died; a live one asks every poll) loses its turn. */
const STALE_WAITER_MS = 3_000;

const LaneStateReply = z.tuple([z.array(z.string()), z.array(z.string())]);

/** The steps (`OPERATION:STEP`) holding a node's lanes now, and those waiting for one, next first. */
export interface NodeLaneState {
  leaving: string[];
  waiting: string[];
}

export async function nodeLaneState(redis: RedisConnection, node: string): Promise<NodeLaneState> {
  const [leaving, waiting] = LaneStateReply.parse(await redis.eval(STATE, 3, keys.nodeLanes(node), keys.nodeLaneQueue(node), keys.nodeLaneSeen(node), String(STALE_WAITER_MS)));
  return { leaving, waiting };
}

// No lane at all would hold every step off a node forever.
function assertLanes(lanes: number): void {
  if (!Number.isInteger(lanes) || lanes < 1) throw new InputError(`a node needs at least one lane (moves at once), got ${lanes}`);
}

export interface HeldLane {
  release(): Promise<void>;
}

/**
 * How many sessions leave one node at once (moves and checkpoints off it),
 * across all workers, taken in the order their steps first asked: as many
 * as the node's agent registered (its cores and link, core/moves-at-once.ts),
 * which the spot-eviction planner times its moves by. Run all at once, they
 * shared the node's CPU and link and each session stayed frozen for the
 * whole batch (four at once on this 2-core VM: 3-5 s of downtime each,
 * against 1.1-1.2 s alone, the batch no sooner done). A lane is a lease,
 * renewed while its step runs: a worker that dies frees it after `ttlMs`.
 */
export class NodeLanes {
  /** This process's waiters by node, woken at once when a lane of that node is released here (others poll). */
  private readonly waiting = new Map<string, Set<() => void>>();

  /** `lanes`: how many a node has when its take does not say (a node that registered no figure of its own). */
  constructor(
    private readonly redis: RedisConnection,
    private readonly lanes: number,
    private readonly ttlMs: number,
    private readonly pollMs = 100,
  ) {
    assertLanes(lanes);
  }

  /**
   * Takes one of the node's `lanes` for `owner` (a step: the same owner again
   * keeps its lane), waiting its turn. Each take counts against the number it
   * is given, so a node whose figure changes (its agent registered again)
   * lets the next step through as soon as fewer than the new number leave.
   */
  async take(node: string, owner: string, onWait?: () => void, lanes = this.lanes): Promise<HeldLane> {
    assertLanes(lanes);
    const key = keys.nodeLanes(node);
    const ask = async (): Promise<boolean> =>
      Number(
        await this.redis.eval(TAKE, 4, key, keys.nodeLaneQueue(node), keys.nodeLaneSeen(node), keys.nodeLaneTurn(node), owner, String(lanes), String(this.ttlMs), String(Math.max(STALE_WAITER_MS, this.pollMs * 20))),
      ) === 1;
    let waited = false;
    while (!(await ask())) {
      if (!waited) onWait?.();
      waited = true;
      await this.nap(node);
    }
    const renew = setInterval(() => {
      // A failed renewal (Redis restarting) costs at most a lane held one lease too few.
      this.redis.eval(RENEW, 1, key, owner, String(this.ttlMs)).catch(() => undefined);
    }, Math.max(100, Math.floor(this.ttlMs / 3)));
    renew.unref();
    return {
      release: async () => {
        clearInterval(renew);
        await this.redis.zrem(key, owner);
        for (const wake of this.waiting.get(node) ?? []) wake();
      },
    };
  }

  /** Until the next poll, or sooner when this process frees one of the node's lanes (a handoff within one worker then costs no poll). */
  private async nap(node: string): Promise<void> {
    const set = this.waiting.get(node) ?? new Set<() => void>();
    this.waiting.set(node, set);
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    set.add(wake);
    const timer = new AbortController();
    try {
      await Promise.race([woken, sleep(this.pollMs, timer.signal).catch(() => undefined)]);
    } finally {
      timer.abort();
      set.delete(wake);
      if (set.size === 0) this.waiting.delete(node);
    }
  }
}
