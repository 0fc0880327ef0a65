/** The p-th percentile (nearest rank) of values; 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  return percentileSorting(Float64Array.from(values), p);
}

/**
 * The same of a typed array, which it sorts in place: the caller's own
 * scratch. A typed array sorts numerically without a comparator, and
 * rightsize fills one straight from each session's samples (this runs for
 * every session in a pass, and the copies were most of its garbage).
 */
export function percentileSorting(values: Float64Array, p: number): number {
  if (values.length === 0) return 0;
  values.sort();
  const rank = Math.ceil((p / 100) * values.length);
  return values[Math.min(values.length, Math.max(1, rank)) - 1] as number;
}
