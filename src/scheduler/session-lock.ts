import { randomBytes } from 'node:crypto';
import { keys } from './keys.js';
import type { RedisConnection } from './redis.js';

// Both keys share the session's slot ({s:ID}): one script takes the lock and
// the next fencing token together.
const ACQUIRE = `
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
`;

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export interface HeldLock {
  sessionId: string;
  /** Strictly greater than every token handed out before for this session: agents refuse older ones. */
  token: number;
  /** Whether the lock was still ours at the last renewal. */
  readonly held: boolean;
  release(): Promise<void>;
}

/**
 * One lock per session, with a fencing token. A lease: it expires unless
 * renewed, so a worker that dies frees it after `ttlMs`; the token a later
 * holder gets is higher, and agents refuse calls with an older one, so a
 * worker that was only paused cannot act after losing the lock.
 */
export class SessionLocks {
  constructor(
    private readonly redis: RedisConnection,
    private readonly ttlMs: number,
  ) {}

  /** Takes the lock, or returns null while someone else holds it. */
  async acquire(sessionId: string, owner = randomBytes(8).toString('hex')): Promise<HeldLock | null> {
    const token = Number(await this.redis.eval(ACQUIRE, 2, keys.lock(sessionId), keys.fence(sessionId), owner, String(this.ttlMs)));
    if (token < 0) return null;
    let held = true;
    const renew = setInterval(() => {
      // A failed renewal (Redis restarting) is not a loss: the agent's fence check is the guard.
      this.redis.eval(RENEW, 1, keys.lock(sessionId), owner, String(this.ttlMs)).then(
        (r) => {
          if (Number(r) === 0) held = false;
        },
        () => undefined,
      );
    }, Math.max(100, Math.floor(this.ttlMs / 3)));
    renew.unref();
    const redis = this.redis;
    return {
      sessionId,
      token,
      get held() {
        return held;
      },
      async release() {
        clearInterval(renew);
        await redis.eval(RELEASE, 1, keys.lock(sessionId), owner);
      },
    };
  }
}
