import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UpstreamError } from '../../src/core/errors.js';
import { newCheckpointId } from '../../src/core/ids.js';
import { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import type { StateOptions } from '../../src/scheduler/defaults.js';
import { startScheduler, type RunningScheduler } from '../../src/scheduler/scheduler.js';
import { TEST_GUARDS, TEST_SPOT_EVICTION, policyDir } from '../helpers/control-plane.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

async function refusal(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof UpstreamError) return err;
    throw err;
  }
  throw new Error('expected the scheduler to refuse');
}

const registration = {
  name: 'node-x',
  instanceId: 'i-0123456789abcdef0',
  instanceType: 'm7i.large',
  zone: 'us-east-1a',
  lifecycle: 'spot',
  pricePerHour: 0.04,
  memoryBytes: 8 * 2 ** 30,
  cpus: 2,
  // Nothing listens there: these tests never reach an agent.
  agentUrl: 'http://127.0.0.1:9',
  agentToken: 'a'.repeat(32),
} as const;

/**
 * Redis and a scheduler with the given state options, without workers (these
 * tests never reach an agent), started before a describe block's tests and
 * stopped after them; its fields are set once they run.
 */
function useApiScheduler(state: Partial<StateOptions>): { redis: TestRedis; scheduler: RunningScheduler; policies: Awaited<ReturnType<typeof policyDir>>; c: SchedulerClient } {
  const t = {} as ReturnType<typeof useApiScheduler>;
  const token = randomBytes(24).toString('hex');
  beforeAll(async () => {
    t.redis = await startRedis();
    t.policies = await policyDir({ 'guards.yaml': TEST_GUARDS, 'spot-eviction.yaml': TEST_SPOT_EVICTION });
    t.scheduler = await startScheduler(
      { host: '127.0.0.1', port: 0, token, redisUrl: t.redis.url, policiesDir: t.policies.dir, intervalMs: 60_000, workers: false, worker: {}, queue: { attempts: 2, backoffMs: 100 }, state },
      pino({ level: 'silent' }),
    );
    t.c = new SchedulerClient(t.scheduler.url, token);
  });
  afterAll(async () => {
    await t.scheduler?.close();
    await t.redis?.close();
    await t.policies?.close();
  });
  return t;
}

describe('the scheduler API', () => {
  const t = useApiScheduler({ sampleRetention: 3, staleAfterMs: 1_000 });

  it('should refuse calls without the token', async () => {
    const e = await refusal(new SchedulerClient(t.scheduler.url, 'wrong-token-wrong-token').nodes());
    expect(e.status).toBe(401);
  });

  it('should register nodes and refuse a registration that is wrong, naming the field', async () => {
    await t.c.register(registration);
    expect((await t.c.nodes()).map((n) => n.name)).toEqual(['node-x']);
    // The agent's token is never shown.
    expect(JSON.stringify(await t.c.nodes())).not.toContain('a'.repeat(32));
    const e = await refusal(t.c.register({ ...registration, lifecycle: 'reserved' as 'spot' }));
    expect(e.status).toBe(400);
    expect(e.message).toMatch(/lifecycle/);
  });

  it('should take a newer agent\'s registration and metrics, dropping the fields it does not know and naming them back', async () => {
    const newer = { ...registration, name: 'node-newer', instanceId: 'i-0123456789abcdefa', lanesByLink: { eth0: 2 }, zz: 1 };
    const answer = await t.c.register(newer as never);
    expect(answer.ignoredFields).toEqual(['lanesByLink', 'zz']);
    const shown = (await t.c.nodes()).find((n) => n.name === 'node-newer');
    expect(shown).toMatchObject({ instanceType: 'm7i.large', memoryBytes: 8 * 2 ** 30 });
    expect(shown).not.toHaveProperty('lanesByLink');
    // A known field still has to be right.
    expect((await refusal(t.c.register({ ...newer, cpus: -1 } as never))).message).toMatch(/cpus/);
    // Nothing is named back when there is nothing to drop.
    expect((await t.c.register({ ...registration, name: 'node-newer', instanceId: 'i-0123456789abcdefa' })).ignoredFields).toBeUndefined();
    const report = { id: 's0000fee1', user: 'ada', state: 'running', url: 'http://10.0.0.9:8888/', token: 't'.repeat(32), rssBytes: 1000, cpuCores: 0.1, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null, gpuBytes: 0 };
    expect(await t.c.pushMetrics('node-newer', { at: new Date().toISOString(), sessions: [report as never], frames: 3 } as never)).toEqual({ updated: 1, ignored: 0, ignoredFields: ['frames', 'sessions[].gpuBytes'] });
    expect(await t.scheduler.state.samples('s0000fee1')).toHaveLength(1);
    expect(await t.scheduler.state.findSession('s0000fee1')).not.toHaveProperty('gpuBytes');
  });

  it('should keep a bounded window of metric samples, and refuse malformed metrics naming the field', async () => {
    const report = { id: 's0000abcd', user: 'ada', state: 'running', url: 'http://10.0.0.2:8888/', token: 't'.repeat(32), rssBytes: 1000, cpuCores: 0.1, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null } as const;
    for (let i = 0; i < 5; i++) await t.c.pushMetrics('node-x', { at: new Date(Date.now() + i).toISOString(), sessions: [{ ...report, rssBytes: 1000 + i }] });
    const samples = await t.scheduler.state.samples('s0000abcd');
    expect(samples.map((s) => s.rssBytes)).toEqual([1002, 1003, 1004]);
    expect((await t.c.getSession('s0000abcd')).node).toBe('node-x');
    const bad = await refusal(t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [{ ...report, rssBytes: -1 }] }));
    expect(bad.status).toBe(400);
    expect(bad.message).toMatch(/sessions\.0\.rssBytes/);
    const unknown = await refusal(t.c.pushMetrics('node-nobody', { at: new Date().toISOString(), sessions: [] }));
    expect(unknown.status).toBe(404);
  });

  it('should hear of a newer checkpoint from another node only once the session\'s own node is quiet', async () => {
    await t.c.register({ ...registration, name: 'node-y', instanceId: 'i-0123456789abcdef1' });
    const report = { id: 's0000beef', user: 'bo', url: 'http://10.0.0.3:8888/', token: 't'.repeat(32), rssBytes: 1000, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null } as const;
    await t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [{ ...report, state: 'running', lastCheckpoint: null }] });
    const kept = { ...report, state: 'checkpointed' as const, lastCheckpoint: 'cmwtz00000000abcd' };
    expect(await t.c.pushMetrics('node-y', { at: new Date().toISOString(), sessions: [kept] })).toEqual({ updated: 0, ignored: 1 });
    expect((await t.c.getSession('s0000beef')).node).toBe('node-x');
    await new Promise((r) => setTimeout(r, 1_200));
    expect(await t.c.pushMetrics('node-y', { at: new Date().toISOString(), sessions: [kept] })).toEqual({ updated: 1, ignored: 0 });
    expect(await t.c.getSession('s0000beef')).toMatchObject({ node: null, state: 'checkpointed', lastCheckpoint: 'cmwtz00000000abcd' });
    // An older checkpoint from elsewhere changes nothing.
    expect(await t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [{ ...kept, lastCheckpoint: 'cmwty00000000abcd' }] })).toEqual({ updated: 0, ignored: 1 });
  });

  it('should leave a session where it is while an operation holds it, whatever another node reports', async () => {
    await t.c.register({ ...registration, name: 'node-z', instanceId: 'i-0123456789abcdef2' });
    const report = { id: 's0000cafe', user: 'cy', state: 'running', url: 'http://10.0.0.4:8888/', token: 't'.repeat(32), rssBytes: 1000, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null } as const;
    await t.c.pushMetrics('node-z', { at: new Date().toISOString(), sessions: [report] });
    const op = {
      id: 'op-cafe',
      kind: 'migrate',
      sessionId: 's0000cafe',
      source: 'node-x',
      target: 'node-z',
      baseCheckpoint: null,
      decision: { action: 'migrate', sessionId: 's0000cafe', source: 'node-x', target: 'node-z', policy: 'p', reason: 'r', costPerHour: 0, deadline: null },
      createdAt: new Date().toISOString(),
    } as const;
    // As a move's worker leaves it: the session recorded on its target, the operation not yet released.
    expect(await t.scheduler.state.claim(op, 'node-z')).toEqual({ ok: true });
    // The source's push, sampled before the freeze, arrives late.
    expect(await t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [report] })).toEqual({ updated: 0, ignored: 1 });
    expect((await t.c.getSession('s0000cafe')).node).toBe('node-z');
    // Its own node is heard as ever.
    expect(await t.c.pushMetrics('node-z', { at: new Date().toISOString(), sessions: [{ ...report, rssBytes: 2000 }] })).toEqual({ updated: 1, ignored: 0 });
    // Released, the session is again where its agent says (moved by hand, say).
    await t.scheduler.state.release(op);
    expect(await t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [report] })).toEqual({ updated: 1, ignored: 0 });
    expect((await t.c.getSession('s0000cafe')).node).toBe('node-x');
  });

  it("should keep what a session's start gave it when the agent's first push crosses the start's write", async () => {
    const report = { id: 's0000d00d', user: 'di', state: 'running', url: 'http://10.0.0.5:8888/', token: 't'.repeat(32), rssBytes: 1000, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null } as const;
    const now = new Date();
    const started = { ...report, node: 'node-x', lastActivityAt: now.toISOString(), lastDisruptionAt: null, updatedAt: now.toISOString(), hub: { user: 'di', server: '', prefix: '/user/di/' }, group: 'physics', requestedBytes: 2 ** 30 };
    // Commands on one connection run in the order sent: the push reads the record (none yet), the start writes it, the push writes what it read.
    const push = t.scheduler.state.applyPush('node-x', { at: now.toISOString(), sessions: [{ ...report, rssBytes: 5000 }] }, now);
    const start = t.scheduler.state.putSession(started);
    await Promise.all([push, start]);
    expect(await t.scheduler.state.getSession('s0000d00d')).toMatchObject({ hub: started.hub, group: 'physics', requestedBytes: 2 ** 30, rssBytes: 5000 });
    // Later pushes and steps keep it too.
    await t.c.pushMetrics('node-x', { at: new Date().toISOString(), sessions: [{ ...report, rssBytes: 6000 }] });
    await t.scheduler.state.updateSession('s0000d00d', { state: 'checkpointed', node: null }, new Date());
    expect(await t.scheduler.state.getSession('s0000d00d')).toMatchObject({ state: 'checkpointed', hub: started.hub, group: 'physics', requestedBytes: 2 ** 30, rssBytes: 6000 });
  });

  it('should take notices in its own shape and as EventBridge events, and refuse malformed ones naming the field', async () => {
    const own = await t.c.notice({ node: 'node-x', action: 'rebalance' });
    expect(own.notice).toMatchObject({ node: 'node-x', kind: 'rebalance', deadline: null });
    const sent = new Date(Date.now() - 10_000);
    const event = {
      version: '0',
      id: '12345678-1234-1234-1234-123456789012',
      'detail-type': 'EC2 Spot Instance Interruption Warning',
      source: 'aws.ec2',
      account: '123456789012',
      time: sent.toISOString().replace(/\.\d+Z$/, 'Z'),
      region: 'us-east-1',
      resources: ['arn:aws:ec2:us-east-1a:instance/i-0123456789abcdef0'],
      detail: { 'instance-id': 'i-0123456789abcdef0', 'instance-action': 'terminate' },
    };
    const eb = await t.c.notice(event);
    expect(eb.notice).toMatchObject({ id: `eb-${event.id}`, node: 'node-x', kind: 'interruption', action: 'terminate' });
    // Two minutes after EC2 sent the warning.
    expect(Date.parse(eb.notice.deadline ?? '')).toBe(Date.parse(event.time) + 120_000);

    const noDetail = await refusal(t.c.notice({ ...event, detail: { 'instance-action': 'terminate' } }));
    expect(noDetail.status).toBe(400);
    expect(noDetail.message).toMatch(/detail\.instance-id/);
    const otherInstance = await refusal(t.c.notice({ ...event, detail: { 'instance-id': 'i-00000000000000000', 'instance-action': 'terminate' } }));
    expect(otherInstance.status).toBe(404);
    expect(otherInstance.message).toMatch(/i-00000000000000000/);
    const badAction = await refusal(t.c.notice({ node: 'node-x', action: 'explode' }));
    expect(badAction.message).toMatch(/action/);
    const unknownNode = await refusal(t.c.notice({ node: 'node-nobody', action: 'terminate' }));
    expect(unknownNode.status).toBe(404);
  });

  it('should keep the last good policies when a file fails validation', async () => {
    await writeFile(join(t.policies.dir, 'idle.yaml'), 'kind: idle\nidleFor: soon\n');
    const e = await refusal(t.c.reloadPolicies());
    expect(e.status).toBe(400);
    expect(e.message).toMatch(/idle\.yaml/);
    expect(e.message).toMatch(/idleFor/);
    expect(t.scheduler.loop.policies.policies.policies.map((p) => p.kind)).toEqual(['spot-eviction']);
    await writeFile(join(t.policies.dir, 'idle.yaml'), 'kind: idle\nidleFor: 10m\n');
    expect((await t.c.reloadPolicies()).policies.sort()).toEqual(['idle', 'spot-eviction']);
  });

  it('should refuse operations that cannot be, saying why', async () => {
    const migrateUnknown = await refusal(t.c.migrate('s0000abcd', 'node-nobody'));
    expect(migrateUnknown.status).toBe(404);
    const same = await refusal(t.c.migrate('s0000abcd', 'node-x'));
    expect(same.status).toBe(409);
    const restoreRunning = await refusal(t.c.restore('s0000abcd'));
    expect(restoreRunning.message).toMatch(/already running/);
    const badId = await refusal(t.c.getSession('nope'));
    expect(badId.status).toBe(400);
  });
});

describe("the scheduler's view of a node that went silent", () => {
  const t = useApiScheduler({ nodeSilentAfterMs: 1_500 });

  it('should place nothing on a node whose agent stopped pushing, until it is heard from again', async () => {
    const node = (name: string, pricePerHour: number, n: number) => ({ ...registration, name, pricePerHour, instanceId: `i-00000000000000${n}`, lifecycle: 'on-demand' as const });
    await t.c.register({ ...node('spot-n', 0.03, 1), lifecycle: 'spot' });
    // The cheapest, and the one whose agent goes quiet (its instance gone, say).
    await t.c.register(node('quiet-q', 0.01, 2));
    await t.c.register(node('heard-h', 0.3, 3));
    const report = { id: 's0000d00d', user: 'di', state: 'running', url: 'http://10.0.0.5:8888/', token: 't'.repeat(32), rssBytes: 2 ** 30, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null } as const;
    const push = async (name: string, sessions: (typeof report)[] = []) => t.c.pushMetrics(name, { at: new Date().toISOString(), sessions });
    await push('quiet-q');
    for (let i = 0; i < 8; i++) {
      await Promise.all([push('spot-n', [report]), push('heard-h')]);
      await new Promise((r) => setTimeout(r, 250));
    }
    const states = Object.fromEntries((await t.c.nodes()).map((n) => [n.name, n.state]));
    expect(states).toEqual({ 'heard-h': 'ready', 'quiet-q': 'silent', 'spot-n': 'ready' });
    // A spot notice moves the session to the dearer node that answers, not to the cheaper silent one.
    const { planned } = await t.c.notice({ node: 'spot-n', action: 'terminate', in: 120 });
    expect(planned.map((op) => [op.kind, op.sessionId, op.target])).toEqual([['migrate', 's0000d00d', 'heard-h']]);
    // Where nothing has room, the refusal names the silent node.
    const full = await refusal(t.c.startSession('ed', { memoryBytes: 8.5 * 2 ** 30 }));
    expect(full.status).toBe(409);
    expect(full.message).toMatch(/not heard from lately, so not used: quiet-q/);
    // Heard from again, it is ready again.
    await push('quiet-q');
    expect((await t.c.nodes()).find((n) => n.name === 'quiet-q')?.state).toBe('ready');
  });

  it('should forget a node the cloud took (not heard from since its deadline), its sessions back at their checkpoints or failed, and keep one still pushing', async () => {
    const node = (name: string, n: number) => ({ ...registration, name, instanceId: `i-10000000000000${n}` });
    await t.c.register(node('taken-t', 1));
    await t.c.register(node('stays-s', 2));
    await t.c.register(node('slept-h', 3));
    const report = (id: string, lastCheckpoint: string | null = null) => ({ id, user: 'fy', state: 'running', url: 'http://10.0.0.6:8888/', token: 't'.repeat(32), rssBytes: 2 ** 20, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint }) as const;
    // One session on the node the cloud takes had a checkpoint (a rebalance snapshot, say) before it; one had none.
    const older = newCheckpointId();
    // A third had failed already (its processes ended), after a checkpoint.
    const beforeItFailed = newCheckpointId();
    await t.c.pushMetrics('taken-t', { at: new Date().toISOString(), sessions: [report('s0000f00d', older), report('s0000f00e'), { ...report('s0000f010', beforeItFailed), state: 'failed' }] });
    await t.c.pushMetrics('stays-s', { at: new Date().toISOString(), sessions: [report('s0000feed')] });
    // A hibernated node may come back with its sessions running: none is put back to a checkpoint.
    const slept = newCheckpointId();
    await t.c.pushMetrics('slept-h', { at: new Date().toISOString(), sessions: [report('s0000f00f', slept)] });
    const deadline = Date.now() + 300;
    for (const name of ['taken-t', 'stays-s']) await t.c.notice({ node: name, action: 'terminate', time: new Date(deadline).toISOString() });
    await t.c.notice({ node: 'slept-h', action: 'hibernate', time: new Date(deadline).toISOString() });
    // Past the deadline by more than nodeSilentAfterMs (1.5 s): stays-s pushes on, taken-t and slept-h are silent.
    while (Date.now() < deadline + 2_000) {
      await t.c.pushMetrics('stays-s', { at: new Date().toISOString(), sessions: [report('s0000feed')] });
      await new Promise((r) => setTimeout(r, 250));
    }
    await t.scheduler.loop.kick();
    const names = (await t.c.nodes()).map((n) => n.name);
    expect(names).toContain('stays-s');
    expect(names).not.toContain('taken-t');
    expect(names).not.toContain('slept-h');
    // It says where it was lost and to which checkpoint it went back (that checkpoint's time is unknown here: only pushed).
    expect(await t.c.getSession('s0000f00d')).toMatchObject({ state: 'checkpointed', node: null, lastCheckpoint: older, lostWithNode: { node: 'taken-t', checkpoint: older, checkpointAt: null } });
    expect((await t.scheduler.state.getSession('s0000f00d')).lastDisruptionAt).not.toBeNull();
    expect(await t.c.getSession('s0000f00e')).toMatchObject({ state: 'failed', node: null, lastCheckpoint: null, lostWithNode: null });
    expect(await t.c.getSession('s0000f010')).toMatchObject({ state: 'failed', node: null, lastCheckpoint: beforeItFailed });
    expect(await t.c.getSession('s0000f00f')).toMatchObject({ state: 'failed', node: null, lastCheckpoint: slept });
    // It is restored (by a request through the gateway, or hubshift restore ID) once the evacuation planned at
    // the notice has failed for good (its agent is gone). No workers run here: the claim is let go as a worker
    // lets it go then.
    const evacuation = (await t.scheduler.state.inFlight()).find((o) => o.sessionId === 's0000f00d');
    expect(evacuation?.decision.policy).toBe('spot-eviction');
    expect((await refusal(t.c.restore('s0000f00d', 'stays-s'))).message).toMatch(`busy with operation ${evacuation!.id}`);
    await t.scheduler.state.release(evacuation!);
    expect(await t.c.restore('s0000f00d', 'stays-s')).toMatchObject({ kind: 'restore', sessionId: 's0000f00d', source: null, target: 'stays-s', baseCheckpoint: older });
    // Once a node reports it running again, that is over.
    await t.c.pushMetrics('stays-s', { at: new Date().toISOString(), sessions: [report('s0000feed'), report('s0000f00d', older)] });
    expect(await t.c.getSession('s0000f00d')).toMatchObject({ state: 'running', node: 'stays-s', lostWithNode: null });
    expect(await t.c.getSession('s0000feed')).toMatchObject({ state: 'running', node: 'stays-s' });
    // A late push from the forgotten node is told to register again.
    expect((await refusal(t.c.pushMetrics('taken-t', { at: new Date().toISOString(), sessions: [] }))).status).toBe(404);
  });
});
