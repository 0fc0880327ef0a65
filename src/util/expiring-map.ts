/**
 * A map whose entries expire, bounded: past `maxSize` entries the expired
 * ones are dropped, and if all are fresh and still too many (a burst of
 * distinct keys, which callers' users choose), all of them: it starts over
 * rather than grows. For short memories of answers worth asking again.
 */
export class ExpiringMap<K, V> {
  private readonly entries = new Map<K, { value: V; until: number }>();

  constructor(
    private readonly maxSize: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The value, while it has not expired. */
  get(key: K): V | undefined {
    const e = this.entries.get(key);
    return e && e.until > this.now() ? e.value : undefined;
  }

  set(key: K, value: V, ttlMs: number): void {
    const t = this.now();
    this.entries.set(key, { value, until: t + ttlMs });
    if (this.entries.size <= this.maxSize) return;
    for (const [k, e] of this.entries) if (e.until <= t) this.entries.delete(k);
    if (this.entries.size > this.maxSize) this.entries.clear();
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
