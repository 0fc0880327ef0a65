import { routePrefixes, type PlacedSession } from '../core/control.js';

interface Entry {
  /** null: the directory said no session has this prefix. */
  s: PlacedSession | null;
  at: number;
}

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
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The remembered session for this path, or undefined where the directory
   * must be asked (nothing remembered is never taken as "no session": a
   * session starting would be refused for a while).
   */
  get(path: string): PlacedSession | undefined {
    const t = this.now();
    for (const prefix of routePrefixes(path)) {
      const hit = this.entries.get(prefix);
      if (!hit || t - hit.at >= this.ttlMs) return undefined;
      if (hit.s !== null) return hit.s;
    }
    return undefined;
  }

  /** Remembers the directory's answer for this path: its session's prefix, and that no longer prefix has one. */
  set(path: string, s: PlacedSession): void {
    if (!s.hub) return;
    const t = this.now();
    for (const prefix of routePrefixes(path)) {
      if (s.hub.prefix === prefix) {
        this.entries.set(prefix, { s, at: t });
        break;
      }
      this.entries.set(prefix, { s: null, at: t });
    }
    if (this.entries.size > PRUNE_AT) this.prune(t);
  }

  /** Forgets a session (it stopped serving where it was). */
  forget(s: PlacedSession): void {
    if (s.hub) this.entries.delete(s.hub.prefix);
  }

  get size(): number {
    return this.entries.size;
  }

  private prune(t: number): void {
    for (const [prefix, e] of this.entries) if (t - e.at >= this.ttlMs) this.entries.delete(prefix);
    // All fresh and still too many (a burst of distinct paths): start over rather than grow.
    if (this.entries.size > PRUNE_AT) this.entries.clear();
  }
}
