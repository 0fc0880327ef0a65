import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import type { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { waitFor } from '../../src/util/exec.js';
import { TEST_GUARDS, operationEnd, spawnHubshift, startControlPlane, type HubshiftProcess, type TestControlPlane } from '../helpers/control-plane.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import type { TestAgent } from '../helpers/test-agent.js';

/**
 * Failures in the middle of a migration: the worker dies, Redis restarts.
 * The scheduler runs here without workers; workers are processes of their own.
 */
describe('a migration that survives its failures', () => {
  let cp: TestControlPlane;
  let c: SchedulerClient;
  let agents: TestAgent[];
  const workers: HubshiftProcess[] = [];

  const startWorkerProcess = async (): Promise<HubshiftProcess> => {
    const w = await spawnHubshift(['worker', '--redis', cp.redis.url, '--lock-seconds', '3', '--log-level', process.env.HUBSHIFT_TEST_LOG ?? 'warn'], /taking jobs/);
    workers.push(w);
    return w;
  };

  beforeAll(async () => {
    cp = await startControlPlane({
      policies: { 'guards.yaml': TEST_GUARDS },
      nodes: [
        { name: 'node-a', lifecycle: 'on-demand', pricePerHour: 0.1 },
        { name: 'node-b', lifecycle: 'on-demand', pricePerHour: 0.1 },
      ],
      config: { workers: false, worker: { lockMs: 3_000 }, queue: { attempts: 5, backoffMs: 500 } },
    });
    ({ client: c, agents } = cp);
  });

  afterEach(async () => {
    for (const w of workers.splice(0)) await w.kill();
  });

  afterAll(async () => {
    for (const w of workers) await w.kill();
    await cp?.close();
  });

  /** Where the session runs, as the agents themselves say. */
  const runningOn = async (id: string): Promise<string[]> => {
    const out: string[] = [];
    for (const [i, a] of agents.entries()) if ((await a.client.findSession(id))?.state === 'running') out.push(i === 0 ? 'node-a' : 'node-b');
    return out;
  };

  /** Waits until an agent is in the middle of `operation` on the session. */
  const midOperation = (agent: TestAgent, id: string, operation: string): Promise<true> =>
    waitFor(`${operation} of ${id} to be under way`, async () => (agent.agent.ctx.registry.progress(id)?.operation === operation ? true : undefined), { timeoutMs: 30_000, intervalMs: 5 });

  for (const [where, operation] of [
    ['dumping on the source', 'move'],
    ['restoring on the target', 'move in'],
  ] as const) {
    it(`should leave the session running on exactly one node when the worker is SIGKILLed while ${where}`, async () => {
      const s = await c.startSession('kim', { node: 'node-a' });
      const k = await kernelWithState(s.url, s.token, 64);
      k.channel.close();
      await startWorkerProcess();
      const op = await c.migrate(s.id, 'node-b');
      await midOperation(operation === 'move' ? agents[0]! : agents[1]!, s.id, operation);
      await workers[0]!.kill();
      // Another worker takes the stalled job over once its lock has run out.
      await startWorkerProcess();
      const end = await operationEnd(c, op.id);
      expect(end.status, JSON.stringify(end.steps.map((x) => [x.step, x.state, x.failedReason]))).toBe('completed');
      expect(await runningOn(s.id)).toEqual(['node-b']);
      expect(await agents[0]!.client.findSession(s.id)).toBeNull();
      const now = await c.getSession(s.id);
      expect({ node: now.node, state: now.state, operation: now.operation }).toEqual({ node: 'node-b', state: 'running', operation: null });
      const ch = await KernelChannel.connect(now.url, now.token, k.kernelId);
      expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
      ch.close();
      await c.removeSession(s.id);
    });
  }

  it('should lose no job when Redis restarts in the middle of a migration', async () => {
    const s = await c.startSession('lou', { node: 'node-b' });
    const k = await kernelWithState(s.url, s.token, 64);
    k.channel.close();
    await startWorkerProcess();
    const op = await c.migrate(s.id, 'node-a');
    await midOperation(agents[1]!, s.id, 'move');
    await cp.redis.servers[0]!.restart();
    const end = await operationEnd(c, op.id);
    expect(end.status, JSON.stringify(end.steps.map((x) => [x.step, x.state, x.failedReason]))).toBe('completed');
    expect(await runningOn(s.id)).toEqual(['node-a']);
    const now = await c.getSession(s.id);
    const ch = await KernelChannel.connect(now.url, now.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
  });
});
