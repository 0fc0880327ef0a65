import { describe, expect, it } from 'vitest';
import { percentile } from '../../src/policy/percentile.js';

describe('percentile (nearest rank)', () => {
  it.each([
    [[], 95, 0],
    [[5], 50, 5],
    [[3, 1, 2], 50, 2],
    [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 95, 10],
    [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1], 90, 9],
    [[100, 2, 30], 1, 2],
  ])('of %j at p%i is %i', (values, p, want) => {
    expect(percentile(values, p)).toBe(want);
  });
});
