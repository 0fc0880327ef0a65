import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../../src/core/cluster.js';
import { routePrefixes, type Operation } from '../../src/core/control.js';
import { duePolicies } from '../../src/policy/schedule.js';
import { typesFromNodes } from '../../src/pricing/instance-types.js';
import { parseNotice } from '../../src/scheduler/notices.js';
import { describeLane, evacuationProgress, evacuationReport } from '../../src/scheduler/evacuation-report.js';
import { jobId, stepsOf } from '../../src/scheduler/queue.js';

const nodes = {
  byInstance: async (id: string) => (id === 'i-0abc' ? 'node-a' : null),
  exists: async (n: string) => n === 'node-a',
};
const now = new Date('2026-11-23T12:00:00.000Z');

describe('notices', () => {
  it.each([
    [{ node: 'node-a', action: 'terminate' }, { kind: 'interruption', action: 'terminate', deadline: '2026-11-23T12:02:00.000Z' }],
    [{ node: 'node-a', action: 'stop', in: 30 }, { kind: 'interruption', action: 'stop', deadline: '2026-11-23T12:00:30.000Z' }],
    [{ node: 'node-a', action: 'hibernate', time: '2026-11-23T12:05:00Z' }, { kind: 'interruption', action: 'hibernate', deadline: '2026-11-23T12:05:00Z' }],
    [{ node: 'node-a', action: 'rebalance' }, { kind: 'rebalance', action: null, deadline: null }],
  ])('should read hubshift notice %j', async (body, want) => {
    expect(await parseNotice(body, nodes, now)).toMatchObject({ node: 'node-a', receivedAt: now.toISOString(), ...want });
  });

  const warning = {
    version: '0',
    id: 'e1',
    'detail-type': 'EC2 Spot Instance Interruption Warning',
    source: 'aws.ec2',
    account: '123456789012',
    time: '2026-11-23T11:59:50Z',
    region: 'us-east-1',
    resources: ['arn:aws:ec2:us-east-1a:instance/i-0abc'],
    detail: { 'instance-id': 'i-0abc', 'instance-action': 'terminate' },
  };

  it('should read EventBridge events: the deadline is two minutes after EC2 sent the warning', async () => {
    expect(await parseNotice(warning, nodes, now)).toEqual({ id: 'eb-e1', node: 'node-a', kind: 'interruption', action: 'terminate', deadline: '2026-11-23T12:01:50.000Z', receivedAt: now.toISOString() });
    const rebalance = { ...warning, 'detail-type': 'EC2 Instance Rebalance Recommendation', detail: { 'instance-id': 'i-0abc' } };
    expect(await parseNotice(rebalance, nodes, now)).toMatchObject({ kind: 'rebalance', action: null, deadline: null });
  });

  it.each([
    [{ ...warning, detail: {} }, /detail\.instance-id/],
    [{ ...warning, 'detail-type': 'EC2 Instance State-change Notification' }, /detail-type/],
    [{ ...warning, source: 'aws.s3' }, /source/],
    [{ node: 'node-a', action: 'terminate', in: -1 }, /in:/],
    [{ node: 'node-a', action: 'terminate', in: 10, time: '2026-11-23T12:05:00Z' }, /not both/],
    [{ node: 'node-a' }, /action/],
    [{ node: 'node-a', action: 'terminate', extra: 1 }, /extra|unrecognized/i],
  ])('should refuse %j naming what is wrong', async (body, msg) => {
    await expect(parseNotice(body, nodes, now)).rejects.toThrow(msg);
  });

  it('should refuse a notice for a node or instance nobody registered', async () => {
    await expect(parseNotice({ node: 'node-z', action: 'terminate' }, nodes, now)).rejects.toMatchObject({ code: 'not_found' });
    await expect(parseNotice({ ...warning, detail: { 'instance-id': 'i-0zzz', 'instance-action': 'terminate' } }, nodes, now)).rejects.toMatchObject({ code: 'not_found' });
  });
});

describe('operations as job flows', () => {
  const op = (kind: Operation['kind']): Operation => ({
    id: 'op1',
    kind,
    sessionId: 's00000001',
    source: 'a',
    target: 'b',
    baseCheckpoint: null,
    decision: { action: 'migrate', sessionId: 's00000001', source: 'a', target: 'b', policy: 'p', reason: 'r', costPerHour: 0, deadline: null },
    createdAt: now.toISOString(),
  });
  it.each([
    ['migrate', ['move', 'finish']],
    ['checkpoint', ['checkpoint', 'finish']],
    ['snapshot', ['checkpoint', 'finish']],
    ['restore', ['restore', 'finish']],
    ['release-node', ['release']],
  ] as const)('a %s runs %j, one job each with an id of its own', (kind, steps) => {
    expect(stepsOf(op(kind))).toEqual(steps);
    expect(new Set(steps.map((s) => jobId('op1', s))).size).toBe(steps.length);
  });
});

describe('instance types from the nodes', () => {
  const node = (name: string, type: string, lifecycle: 'spot' | 'on-demand', price: number): NodeInfo => ({
    name,
    instanceId: name,
    instanceType: type,
    zone: 'z',
    lifecycle,
    pricePerHour: price,
    memoryBytes: 2 ** 33,
    cpus: 2,
    state: 'ready',
    registeredAt: now.toISOString(),
  });
  it('should take the on-demand price from on-demand nodes and the lowest spot price from spot ones', () => {
    const types = typesFromNodes([node('a', 'm.large', 'spot', 0.03), node('b', 'm.large', 'spot', 0.025), node('c', 'm.large', 'on-demand', 0.1), node('d', 'c.large', 'on-demand', 0.08)]);
    expect(types).toEqual([
      { name: 'm.large', memoryBytes: 2 ** 33, cpus: 2, onDemandPricePerHour: 0.1, spotPricePerHour: 0.025 },
      { name: 'c.large', memoryBytes: 2 ** 33, cpus: 2, onDemandPricePerHour: 0.08, spotPricePerHour: null },
    ]);
  });
});

describe('scheduled policies due', () => {
  const policies = [
    { name: 'nightly', enabled: true, schedule: '0 3 * * *', timezone: 'UTC' },
    { name: 'off', enabled: false, schedule: '0 3 * * *', timezone: 'UTC' },
    { name: 'always', enabled: true },
  ];
  it.each([
    ['2026-11-24T03:00:00.000Z', {}, ['nightly']],
    ['2026-11-24T02:59:59.999Z', {}, []],
    ['2026-11-24T03:00:30.000Z', { nightly: '2026-11-24T03:00:00.000Z' }, []],
    ['2026-11-25T03:00:00.000Z', { nightly: '2026-11-24T03:00:00.000Z' }, ['nightly']],
  ])('at %s with last runs %j: %j', (at, lastRuns, want) => {
    expect(duePolicies(policies, lastRuns, new Date(at))).toEqual(want);
  });
});

describe('the evacuation report', () => {
  const notice = { id: 'n1', node: 'spot-a', kind: 'interruption' as const, action: 'terminate' as const, deadline: '2026-11-23T12:02:00.000Z', receivedAt: '2026-11-23T12:00:00.000Z' };
  const act = (sessionId: string, outcome: 'planned' | 'done' | 'failed', at: string, source = 'spot-a') => ({
    at,
    operation: `op-${sessionId}`,
    action: 'migrate' as const,
    outcome,
    sessionId,
    source,
    target: 'od-b',
    policy: 'spot-eviction',
    reason: 'r',
    costPerHour: 0,
    detail: outcome === 'failed' ? 'move: boom' : null,
  });
  const rec = (id: string, node: string) => ({ id, user: 'u', node, state: 'running' as const, url: '', token: '', rssBytes: 0, cpuCores: 0, busy: false, connections: 0, lastActivityAt: now.toISOString(), lastDisruptionAt: null, lostWithNode: null, hub: null,
      group: null,
      requestedBytes: null, lastCheckpoint: null, updatedAt: now.toISOString() });
  it('should give each session its latest outcome since the notice, its margin to the deadline, and what is left', () => {
    const actions = [
      // Newest first, as the log keeps them.
      act('s00000002', 'failed', '2026-11-23T12:00:40.000Z'),
      act('s00000001', 'done', '2026-11-23T12:00:30.000Z'),
      act('s00000002', 'planned', '2026-11-23T12:00:01.000Z'),
      act('s00000001', 'planned', '2026-11-23T12:00:01.000Z'),
      act('s00000009', 'done', '2026-11-23T11:00:00.000Z'),
      act('s00000008', 'done', '2026-11-23T12:00:20.000Z', 'elsewhere'),
    ];
    const r = evacuationReport(notice, actions, [rec('s00000001', 'od-b'), rec('s00000002', 'spot-a'), rec('s00000003', 'spot-a')]);
    expect(r.sessions.map((x) => [x.sessionId, x.outcome, x.marginSeconds])).toEqual([
      ['s00000001', 'done', 90],
      ['s00000002', 'failed', null],
    ]);
    expect(r.left).toEqual(['s00000003']);
    expect(r.sessions.every((x) => x.lane === null)).toBe(true);
  });

  it("should say where each planned session stands at the node's lanes, and count them in the progress line", () => {
    const planned = ['s00000001', 's00000002', 's00000003', 's00000004'].map((id) => act(id, 'planned', '2026-11-23T12:00:01.000Z'));
    const actions = [act('s00000005', 'done', '2026-11-23T12:00:30.000Z'), ...planned, act('s00000005', 'planned', '2026-11-23T12:00:01.000Z')];
    // s1 moves now, s3 then s2 wait (in that order), s4's job has not reached a lane; a lane of another operation's step is not theirs.
    const lanes = { leaving: ['op-s00000001:move', 'op-elsewhere:move'], waiting: ['op-s00000003:checkpoint', 'op-s00000002:move'] };
    const r = evacuationReport(notice, actions, [], lanes);
    expect(r.sessions.map((x) => [x.sessionId, x.outcome, x.lane])).toEqual([
      ['s00000001', 'planned', { state: 'leaving', turn: null }],
      ['s00000002', 'planned', { state: 'waiting', turn: 2 }],
      ['s00000003', 'planned', { state: 'waiting', turn: 1 }],
      ['s00000004', 'planned', null],
      ['s00000005', 'done', null],
    ]);
    expect(evacuationProgress(r)).toBe('1 of 5 done; 1 leaving, 2 waiting for a lane, 1 queued');
    expect(describeLane({ state: 'waiting', turn: 2 })).toBe('waiting for a lane off the node, turn 2');
    // A session done while its step still shows at a lane (the report read between the two) is done.
    const after = evacuationReport(notice, [act('s00000001', 'done', '2026-11-23T12:00:40.000Z'), ...actions], [], lanes);
    expect(after.sessions.find((x) => x.sessionId === 's00000001')?.lane).toBeNull();
    expect(evacuationProgress(after)).toBe('2 of 5 done; 2 waiting for a lane, 1 queued');
  });
});

describe('hub route prefixes', () => {
  it('should give the prefixes a path could belong to, longest first, without the query', () => {
    expect(routePrefixes('/user/ann/lab/api/kernels?token=x')).toEqual(['/user/ann/lab/api/', '/user/ann/lab/', '/user/ann/', '/user/']);
    expect(routePrefixes('/user/ann/')).toEqual(['/user/ann/', '/user/']);
    expect(routePrefixes('/')).toEqual([]);
  });
});
