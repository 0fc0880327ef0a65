import { describe, expect, it } from 'vitest';
import { defaultMovesAtOnce } from '../../src/core/moves-at-once.js';

describe("a node's moves at once, where its operator does not say", () => {
  it.each([
    // This VM: two cores, one move at a time (four at once froze each session three times as long).
    [{ cores: 2, networkGbps: 10 }, 1],
    [{ cores: 1, networkGbps: 10 }, 1],
    // The link is the tighter bound on most instances: 12.5 Gbit/s carries one move at ~1 GB/s.
    [{ cores: 16, networkGbps: 12.5 }, 1],
    [{ cores: 16, networkGbps: 25 }, 3],
    // The cores, on a fast link.
    [{ cores: 8, networkGbps: 100 }, 4],
    // Never none, never past what a node may register.
    [{ cores: 1, networkGbps: 0.5 }, 1],
    [{ cores: 448, networkGbps: 3200 }, 64],
  ])('%o: %i', (node, expected) => {
    expect(defaultMovesAtOnce(node)).toBe(expected);
  });
});
