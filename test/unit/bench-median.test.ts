import { describe, expect, it } from 'vitest';
import { median } from '../bench/median.js';

describe("the benches' median", () => {
  it('should take the mean of the two middle values of an even count, not the lower one', () => {
    // Four 2 GiB post-copy moves of 2026-12-04 03:39: printed as "median 0.37 s" before this.
    expect(median([0.47, 0.5, 0.37, 0.34])).toBeCloseTo(0.42, 10);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([5])).toBe(5);
    expect(median([])).toBeNaN();
  });
});
