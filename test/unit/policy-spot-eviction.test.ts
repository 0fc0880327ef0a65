import { describe, expect, it } from 'vitest';
import { evaluate } from '../../src/policy/evaluate.js';
import { GiB, NOW, later, node, policies, session, snapshot } from './policy-fixtures.js';

const spot = policies([{ kind: 'spot-eviction', safetyMargin: '20s', moveBytesPerSecond: 1e9, moveFixedSeconds: 2, checkpointBytesPerSecond: 1e12, checkpointFixedSeconds: 0, headroom: 1 }], { budgets: { perNode: 0, total: 0 } });
const interruption = (nodeName: string, inMs: number) => ({ id: `n-${nodeName}`, node: nodeName, kind: 'interruption' as const, action: 'terminate' as const, deadline: later(inMs), receivedAt: NOW.toISOString() });

describe('spot eviction', () => {
  it('should move every session off the node, smallest first, to the cheapest node with room, whatever the budgets', () => {
    const d = evaluate(
      snapshot({
        nodes: [node('spot-a', { lifecycle: 'spot' }), node('dear', { pricePerHour: 0.5 }), node('cheap', { pricePerHour: 0.2 })],
        sessions: [session('big', 'spot-a', { rssBytes: 3 * GiB, busy: true }), session('small', 'spot-a', { rssBytes: GiB })],
        notices: [interruption('spot-a', 120_000)],
      }),
      spot,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId, x.target])).toEqual([
      ['migrate', 'small', 'cheap'],
      ['migrate', 'big', 'cheap'],
    ]);
    expect(d[0]?.reason).toMatch(/spot interruption \(terminate\) of spot-a/);
    expect(d[0]?.deadline).toBe(later(120_000));
  });

  it('should checkpoint what cannot be moved before the deadline', () => {
    // 120 s left, 20 s margin: 100 s usable. Moves: 2 + 50 s, then 2 + 60 s (too late).
    const d = evaluate(
      snapshot({
        nodes: [node('spot-a', { memoryBytes: 256 * GiB }), node('other', { memoryBytes: 256 * GiB })],
        sessions: [session('a', 'spot-a', { rssBytes: 50e9 }), session('b', 'spot-a', { rssBytes: 60e9 })],
        notices: [interruption('spot-a', 120_000)],
      }),
      spot,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([
      ['migrate', 'a'],
      ['checkpoint', 'b'],
    ]);
    expect(d[1]?.reason).toMatch(/too close to the deadline for a move \(about 114 s needed with the checkpoints after it, 100 s usable\)/);
    // a's move (52 s) must start within 48 s to end before the margin; a worker reaching it later checkpoints it instead.
    expect(d[0]?.startBy).toBe(later(48_000));
    expect(d[1]?.startBy).toBeUndefined();
    expect(d[1]?.costPerHour).toBeLessThan(0);
  });

  /** A spot node registered with `movesAtOnce` lanes, holding sessions a, b, c... of these sizes, 120 s before its end. */
  const evacuate = (movesAtOnce: number, sizes: number[], policy = spot) =>
    evaluate(
      snapshot({
        nodes: [node('spot-a', { memoryBytes: 1024 * GiB, movesAtOnce }), node('other', { memoryBytes: 1024 * GiB })],
        sessions: sizes.map((rssBytes, i) => session(String.fromCharCode(97 + i), 'spot-a', { rssBytes })),
        notices: [interruption('spot-a', 120_000)],
      }),
      policy,
      NOW,
    );

  it('should time the moves across the lanes the node registered, each as soon as one is free', () => {
    // The two sessions above, with two lanes: 2 + 50 s and 2 + 60 s side by side, both done by 62 s of 100 s usable.
    expect(evacuate(1, [50e9, 60e9]).map((x) => x.action)).toEqual(['migrate', 'checkpoint']);
    const d = evacuate(2, [50e9, 60e9]);
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([
      ['migrate', 'a'],
      ['migrate', 'b'],
    ]);
    expect(d[1]?.reason).toMatch(/done by 62 s of 120 s left, 2 at once off the node/);
  });

  it('should plan a move only where the checkpoints after it still end in time on the lanes', () => {
    // 100 s usable, a checkpoint 10 s whatever its size.
    const slowCheckpoints = policies([{ kind: 'spot-eviction', safetyMargin: '20s', moveBytesPerSecond: 1e9, moveFixedSeconds: 2, checkpointBytesPerSecond: 1e12, checkpointFixedSeconds: 10, headroom: 1 }], {
      budgets: { perNode: 0, total: 0 },
    });
    // Two lanes: a on the first (52 s), b on the second (62 s); c's move on the first would end at 124 s: checkpointed there.
    const d = evacuate(2, [50e9, 60e9, 70e9], slowCheckpoints);
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([
      ['migrate', 'a'],
      ['migrate', 'b'],
      ['checkpoint', 'c'],
    ]);
    expect(d[2]?.reason).toMatch(/about 124 s needed with the checkpoints after it, 100 s usable/);
    // One lane: b's move would leave c's checkpoint ending at 52 + 62 + 10 = 124 s, so b is checkpointed too.
    expect(evacuate(1, [50e9, 60e9, 70e9], slowCheckpoints).map((x) => x.action)).toEqual(['migrate', 'checkpoint', 'checkpoint']);
  });

  it('should checkpoint when no node has room', () => {
    const d = evaluate(
      snapshot({ nodes: [node('spot-a'), node('full', { memoryBytes: 2 * GiB })], sessions: [session('a', 'spot-a', { rssBytes: 3 * GiB }), session('x', 'full', { rssBytes: GiB })], notices: [interruption('spot-a', 120_000)] }),
      spot,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([['checkpoint', 'a']]);
    expect(d[0]?.reason).toContain('no node has room for 3.0 GiB');
  });

  it('should not move anything onto another node that has a notice', () => {
    const d = evaluate(
      snapshot({ nodes: [node('spot-a'), node('spot-b')], sessions: [session('a', 'spot-a')], notices: [interruption('spot-a', 120_000), interruption('spot-b', 300_000)] }),
      spot,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([['checkpoint', 'a']]);
  });

  it.each([
    ['a notice for a node hubshift does not know', interruption('stranger', 120_000)],
    ['a notice whose deadline has passed', interruption('spot-a', -1_000)],
  ])('should do nothing for %s', (_what, notice) => {
    expect(evaluate(snapshot({ nodes: [node('spot-a'), node('other')], sessions: [session('a', 'spot-a')], notices: [notice] }), spot, NOW)).toEqual([]);
  });

  it('should leave sessions already in flight alone', () => {
    const d = evaluate(
      snapshot({ nodes: [node('spot-a'), node('other')], sessions: [session('a', 'spot-a')], notices: [interruption('spot-a', 120_000)], inFlight: [{ sessionId: 'a', node: 'spot-a', action: 'migrate' }] }),
      spot,
      NOW,
    );
    expect(d).toEqual([]);
  });
});

describe('a node whose interruption deadline has passed', () => {
  it('should take nothing: the cloud has it, however cheap it was', () => {
    const d = evaluate(
      snapshot({
        nodes: [node('spot-a', { lifecycle: 'spot' }), node('gone', { pricePerHour: 0.01 }), node('dear', { pricePerHour: 0.5 })],
        sessions: [session('a', 'spot-a', { rssBytes: GiB })],
        notices: [interruption('spot-a', 120_000), interruption('gone', -60_000)],
      }),
      spot,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId, x.target])).toEqual([['migrate', 'a', 'dear']]);
  });
});
