import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { HubRoute } from '../core/control.js';
import { errorMessage } from '../core/errors.js';
import { ExpiringMap } from '../util/expiring-map.js';

/** What JupyterHub's `GET /hub/api/user` says of a token's owner (every valid token may ask it). */
const TokenOwner = z
  .object({
    name: z.string(),
    kind: z.string().optional(),
    /** The token's own scopes, expanded (JupyterHub 2 and later). */
    scopes: z.array(z.string()).default([]),
  })
  .passthrough();
type TokenOwner = z.infer<typeof TokenOwner>;

/** How long the hub's answer for a token is kept: a valid one, and one the hub refused. */
const KNOWN_MS = 60_000;
const REFUSED_MS = 10_000;
const MAX_KNOWN = 4096;
/** A hub that does not answer is said to be so at most this often, not once a request. */
const WARN_EVERY_MS = 10_000;

/**
 * Whether a token may use a server, in JupyterHub's terms: the server's own
 * user (a browser's OAuth token, the user's API tokens), or a token with an
 * `access:servers` scope that covers it (an admin's, a service's).
 */
export function mayAccess(owner: Pick<TokenOwner, 'name' | 'kind' | 'scopes'>, route: Pick<HubRoute, 'user' | 'server'>): boolean {
  if (owner.kind !== 'service' && owner.name === route.user) return true;
  const covering = ['access:servers', `access:servers!user=${route.user}`, `access:servers!server=${route.user}/${route.server}`];
  return owner.scopes.some((s) => covering.includes(s));
}

/**
 * Asks the hub whose a token is (`GET /hub/api/user`), so that the gateway
 * wakes a sleeping server only for someone the hub lets use it. Answers are
 * kept a minute (a refusal ten seconds), by the token's sha256.
 */
export class HubIdentity {
  /** The hub's answers by the token's sha256; null: the hub refused the token. */
  private readonly known = new ExpiringMap<string, TokenOwner | null>(MAX_KNOWN);
  private warnedAt = 0;

  constructor(
    readonly apiUrl: string,
    private readonly log: Logger,
  ) {}

  /** Whether any of `tokens` may use the server at `route`. A hub that does not answer allows nothing. */
  async allows(route: Pick<HubRoute, 'user' | 'server'>, tokens: readonly string[]): Promise<boolean> {
    for (const t of tokens) {
      const owner = await this.ownerOf(t);
      if (owner && mayAccess(owner, route)) return true;
    }
    return false;
  }

  private async ownerOf(token: string): Promise<TokenOwner | null> {
    const key = createHash('sha256').update(token).digest('hex');
    const hit = this.known.get(key);
    if (hit !== undefined) return hit;
    let owner: TokenOwner | null = null;
    try {
      const res = await fetch(`${this.apiUrl.replace(/\/$/, '')}/user`, { headers: { Authorization: `token ${token}` }, signal: AbortSignal.timeout(5_000) });
      if (res.ok) owner = TokenOwner.parse(await res.json());
      else if (res.status !== 401 && res.status !== 403) throw new Error(`the hub answered ${res.status}`);
    } catch (err) {
      // Not remembered: the next request asks again.
      if (Date.now() - this.warnedAt < WARN_EVERY_MS) return null;
      this.warnedAt = Date.now();
      this.log.warn({ err: errorMessage(err) }, 'could not ask the hub whose a token is (is --hub-api-url right?); the request may not wake its session');
      return null;
    }
    this.known.set(key, owner, owner ? KNOWN_MS : REFUSED_MS);
    return owner;
  }
}
