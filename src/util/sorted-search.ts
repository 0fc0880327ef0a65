/**
 * Binary search over positions 0..length-1 for a `reached` that is false up
 * to some position and true from it on: the first position where it holds,
 * or `length` where it never does.
 */
export function firstReached(length: number, reached: (i: number) => boolean): number {
  let [lo, hi] = [0, length];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (reached(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
