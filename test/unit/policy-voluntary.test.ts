import { describe, expect, it } from 'vitest';
import { evaluate } from '../../src/policy/evaluate.js';
import { GiB, NOW, ago, node, policies, session, snapshot } from './policy-fixtures.js';

const idleSession = (id: string, nodeName: string, over = {}) => session(id, nodeName, { connections: 0, cpuCores: 0.01, lastActivityAt: ago(2 * 3_600_000), ...over });
const idlePolicy = policies([{ kind: 'idle', idleFor: '30m', cpuBelow: 0.05 }]);

describe('idle', () => {
  it('should checkpoint a session idle long enough, with its saving', () => {
    const d = evaluate(snapshot({ nodes: [node('n1')], sessions: [idleSession('a', 'n1', { rssBytes: 4 * GiB })] }), idlePolicy, NOW);
    expect(d).toEqual([
      expect.objectContaining({ action: 'checkpoint', sessionId: 'a', source: 'n1', target: null, policy: 'idle-0', reason: expect.stringMatching(/^idle for 2\.0 h /) }),
    ]);
    // 4 of the node's 32 GiB: an eighth of $0.252/h saved, less a little for the store.
    expect(d[0]?.costPerHour).toBeCloseTo(-0.0315 + (4 * GiB * 0.023) / 1e9 / 730, 6);
  });

  it('should say how long a session was idle in the unit that reads best', () => {
    const reason = (idleMs: number): string | undefined =>
      evaluate(snapshot({ nodes: [node('n1')], sessions: [idleSession('a', 'n1', { lastActivityAt: ago(idleMs) })] }), policies([{ kind: 'idle', idleFor: '15s' }]), NOW)[0]?.reason;
    expect(reason(20_000)).toMatch(/^idle for 20 s /);
    expect(reason(45 * 60_000)).toMatch(/^idle for 45 min /);
  });

  it.each([
    ['used recently', { lastActivityAt: ago(10 * 60_000) }],
    ['with a browser connected', { connections: 1 }],
    ['with a kernel busy', { busy: true }],
    ['using CPU', { cpuCores: 0.5 }],
    ['in cooldown', { lastDisruptionAt: ago(5 * 60_000) }],
    ['already checkpointed', { state: 'checkpointed' as const }],
  ])('should leave alone a session %s', (_what, over) => {
    expect(evaluate(snapshot({ nodes: [node('n1')], sessions: [idleSession('a', 'n1', over)] }), idlePolicy, NOW)).toEqual([]);
  });

  it('should leave alone a session on a silent node (its agent would not answer)', () => {
    const d = evaluate(snapshot({ nodes: [node('n1', { state: 'silent' }), node('n2')], sessions: [idleSession('a', 'n1'), idleSession('b', 'n2')] }), idlePolicy, NOW);
    expect(d.map((x) => x.sessionId)).toEqual(['b']);
  });

  it('should stop at the disruption budgets, counting operations in flight', () => {
    const sessions = ['a', 'b', 'c'].map((id) => idleSession(id, 'n1'));
    const perNode = policies([{ kind: 'idle' }], { budgets: { perNode: 2, total: 10 } });
    expect(evaluate(snapshot({ nodes: [node('n1')], sessions, inFlight: [{ sessionId: 'z', node: 'n1', action: 'checkpoint' }] }), perNode, NOW).map((x) => x.sessionId)).toEqual(['a']);
    const total = policies([{ kind: 'idle' }], { budgets: { perNode: 5, total: 0 } });
    expect(evaluate(snapshot({ nodes: [node('n1')], sessions }), total, NOW)).toEqual([]);
  });

  it('should decide for every idle session of a very large cluster in one pass, without overflowing the stack', () => {
    // More decisions of one method than a spread into push()'s arguments can take (some 125k here).
    const count = 200_000;
    const sessions = Array.from({ length: count }, (_, i) => idleSession(`s${i}`, `n${i % 100}`, { rssBytes: 0.1 * GiB }));
    const nodes = Array.from({ length: 100 }, (_, i) => node(`n${i}`));
    const many = policies([{ kind: 'idle' }], { budgets: { perNode: count, total: count } });
    const d = evaluate(snapshot({ nodes, sessions }), many, NOW);
    expect(d.length).toBe(count);
    expect(d.at(-1)).toEqual(expect.objectContaining({ action: 'checkpoint', sessionId: `s${count - 1}` }));
  });
});

describe('rebalance', () => {
  it('should snapshot the sessions of a node with a recommendation, not the busy ones, and only once', () => {
    const notice = { id: 'r1', node: 'n1', kind: 'rebalance' as const, action: null, deadline: null, receivedAt: ago(1_000) };
    const set = policies([{ kind: 'rebalance' }]);
    const d = evaluate(snapshot({ nodes: [node('n1')], sessions: [session('a', 'n1'), session('b', 'n1', { busy: true })], notices: [notice] }), set, NOW);
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([['snapshot', 'a']]);
    // Once snapshotted, the cooldown holds it.
    expect(evaluate(snapshot({ nodes: [node('n1')], sessions: [session('a', 'n1', { lastDisruptionAt: ago(1_000) })], notices: [notice] }), set, NOW)).toEqual([]);
  });
});

describe('rightsize', () => {
  const samples = (gib: number, cores = 0.2) => [1, 2, 3, 4].map((m) => ({ at: ago(m * 60_000, new Date('2026-11-24T03:00:00Z')), rssBytes: gib * GiB, cpuCores: cores }));
  const set = policies([{ kind: 'rightsize', schedule: '0 3 * * *', window: '1h', percentile: 95, headroom: 1.25, minSavingPerHour: 0.005 }]);
  const cluster = snapshot({
    nodes: [node('dear', { pricePerHour: 1.0, memoryBytes: 16 * GiB }), node('cheap', { pricePerHour: 0.25, memoryBytes: 16 * GiB })],
    sessions: [session('a', 'dear', { samples: samples(2) })],
  });

  it.each([
    ['exactly at the scheduled minute', '2026-11-24T03:00:00Z', undefined, 1],
    ['a second before it', '2026-11-24T02:59:59Z', undefined, 0],
    ['after it already ran', '2026-11-24T03:00:30Z', '2026-11-24T03:00:00Z', 0],
    ['when a run was missed since the last one', '2026-11-24T03:10:00Z', '2026-11-23T03:00:00Z', 1],
  ])('should run %s', (_what, at, lastRun, count) => {
    const d = evaluate({ ...cluster, lastRuns: lastRun ? { 'rightsize-0': lastRun } : {} }, set, new Date(at));
    expect(d).toHaveLength(count);
  });

  it('should move a session to a node where it fits and costs less, and say by how much', () => {
    const [d] = evaluate(cluster, set, new Date('2026-11-24T03:00:00Z'));
    expect(d).toMatchObject({ action: 'migrate', sessionId: 'a', source: 'dear', target: 'cheap' });
    expect(d?.reason).toMatch(/^p95 over 60 min: 2.0 GiB, 0.20 cores; fits cheap/);
    // Its 1 GiB's share of each node's price per hour: $1.00 and $0.25 for 16 GiB.
    expect(d?.costPerHour).toBeCloseTo(-(1.0 - 0.25) / 16, 6);
  });

  it('should not move for a saving below the threshold, nor where the CPU does not fit', () => {
    const close = snapshot({ ...cluster, nodes: [node('dear', { pricePerHour: 0.252 }), node('cheap', { pricePerHour: 0.251 })] });
    expect(evaluate(close, set, new Date('2026-11-24T03:00:00Z'))).toEqual([]);
    const busyCpu = snapshot({ ...cluster, sessions: [session('a', 'dear', { samples: samples(2, 8) })] });
    expect(evaluate(busyCpu, set, new Date('2026-11-24T03:00:00Z'))).toEqual([]);
  });

  it('should relieve a node whose sessions need more memory than it has, largest first', () => {
    const tight = snapshot({
      // Needs with headroom: 6.25 + 3.75 GiB on an 8 GiB node. big is dearer per GB-hour, so only pressure moves anything.
      nodes: [node('small', { memoryBytes: 8 * GiB, pricePerHour: 0.1 }), node('big', { memoryBytes: 64 * GiB, pricePerHour: 0.9 })],
      sessions: [session('a', 'small', { samples: samples(5) }), session('b', 'small', { samples: samples(3) })],
    });
    const d = evaluate(tight, set, new Date('2026-11-24T03:00:00Z'));
    expect(d.map((x) => [x.sessionId, x.target])).toEqual([['a', 'big']]);
    expect(d[0]?.reason).toMatch(/^small is short of memory/);
  });
});

describe('consolidate', () => {
  const set = policies([{ kind: 'consolidate', utilizationBelow: 0.3, headroom: 1.2, minNodes: 1 }]);

  it('should empty the least used node into the others and release it', () => {
    const d = evaluate(
      snapshot({ nodes: [node('n1'), node('n2')], sessions: [session('a', 'n1', { rssBytes: 2 * GiB }), session('b', 'n2', { rssBytes: 8 * GiB })] }),
      set,
      NOW,
    );
    expect(d.map((x) => [x.action, x.sessionId, x.source, x.target])).toEqual([
      ['migrate', 'a', 'n1', 'n2'],
      ['release-node', null, 'n1', null],
    ]);
    expect(d[1]?.costPerHour).toBe(-0.252);
  });

  it.each([
    ['the sessions do not fit elsewhere', [session('a', 'n1', { rssBytes: 8 * GiB }), session('b', 'n2', { rssBytes: 9 * GiB })], { memoryBytes: 16 * GiB }],
    ['a session on it is busy', [session('a', 'n1', { busy: true }), session('b', 'n2', { rssBytes: 12 * GiB })], {}],
  ])('should keep a node when %s', (_what, sessions, over) => {
    const d = evaluate(snapshot({ nodes: [node('n1', over), node('n2', over)], sessions }), set, NOW);
    expect(d).toEqual([]);
  });

  it('should never go below minNodes', () => {
    expect(evaluate(snapshot({ nodes: [node('only')] }), set, NOW)).toEqual([]);
  });

  it('should do nothing in quiet hours, while idle checkpoints go on', () => {
    const monday10 = new Date('2026-11-23T10:00:00Z');
    const both = policies([{ kind: 'consolidate' }, { kind: 'idle' }], { quietHours: [{ days: ['mon'], start: '09:00', end: '17:00' }] });
    const d = evaluate(
      snapshot({ nodes: [node('n1'), node('n2')], sessions: [session('a', 'n1', { connections: 0, cpuCores: 0, lastActivityAt: ago(3_600_000, monday10) }), session('b', 'n2')] }),
      both,
      monday10,
    );
    expect(d.map((x) => [x.action, x.sessionId])).toEqual([['checkpoint', 'a']]);
  });
});
