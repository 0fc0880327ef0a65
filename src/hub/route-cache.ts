import { routePrefixes, type PlacedSession } from '../core/control.js';
import { ExpiringMap } from '../util/expiring-map.js';

/** Past this many entries, stale ones are dropped (paths are the users' to choose, so entries are too). */
const PRUNE_AT = 4096;

/**
 * The gateway's short memory of which session serves a path. It answers only
 * what the directory would: the session with the longest prefix of the path.
 * So a remembered /user/ann/ answers for /user/ann/lab/... only while it is
 * also remembered that no session has /user/ann/lab/ (the named server may
 * have started since), and everything is forgotten after `ttlMs`.
 */
export class RouteCache {
  /** By prefix; null: the directory said no session has this prefix. */
  private readonly entries: ExpiringMap<string, PlacedSession | null>;

  constructor(
    private readonly ttlMs: number,
    now: () => number = Date.now,
  ) {
    this.entries = new ExpiringMap(PRUNE_AT, now);
  }

  /**
   * The remembered session for this path, or undefined where the directory
   * must be asked (nothing remembered is never taken as "no session": a
   * session starting would be refused for a while).
   */
  get(path: string): PlacedSession | undefined {
    for (const prefix of routePrefixes(path)) {
      const hit = this.entries.get(prefix);
      if (hit === undefined) return undefined;
      if (hit !== null) return hit;
    }
    return undefined;
  }

  /** Remembers the directory's answer for this path: its session's prefix, and that no longer prefix has one. */
  set(path: string, s: PlacedSession): void {
    if (!s.hub) return;
    for (const prefix of routePrefixes(path)) {
      if (s.hub.prefix === prefix) {
        this.entries.set(prefix, s, this.ttlMs);
        break;
      }
      this.entries.set(prefix, null, this.ttlMs);
    }
  }

  /** Forgets a session (it stopped serving where it was). */
  forget(s: PlacedSession): void {
    if (s.hub) this.entries.delete(s.hub.prefix);
  }

  get size(): number {
    return this.entries.size;
  }
}
