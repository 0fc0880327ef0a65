import { expect } from 'vitest';
import type { MoveResult } from '../../src/core/checkpoint.js';

/**
 * The freeze an agent reports lies within the move request, and its downtime
 * ends before the answer (times from Date.now(); a few ms for the two
 * processes' clocks rounding differently).
 */
export function expectFrozenWithin(r: MoveResult, requestedAt: number, answeredAt: number): void {
  const frozen = Date.parse(r.frozenAt);
  expect(frozen).toBeGreaterThanOrEqual(requestedAt - 5);
  expect(frozen + r.downtimeSeconds * 1000).toBeLessThanOrEqual(answeredAt + 5);
}
