import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { pino } from 'pino';
import { UpstreamError } from '../../src/core/errors.js';
import type { Decision } from '../../src/core/decision.js';
import { keys } from '../../src/scheduler/keys.js';
import { Planner } from '../../src/scheduler/planner.js';
import { OpsQueue } from '../../src/scheduler/queue.js';
import { connectRedis, closeRedis } from '../../src/scheduler/redis.js';
import { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { startScheduler } from '../../src/scheduler/scheduler.js';
import { waitFor } from '../../src/util/exec.js';
import { startNoopAgent } from '../helpers/noop-agent.js';
import { policyDir, TEST_GUARDS, TEST_SPOT_EVICTION } from '../helpers/control-plane.js';
import { startRedis } from '../helpers/redis.js';
import { stopOnInterrupt } from './interrupt.js';
import { median } from './median.js';

export interface NoticeFigures {
  runs: number;
  /** Notice POSTed on the API to the first call that changes something on an agent, ms. */
  medianMs: number;
  maxMs: number;
  /** Physical baseline: one loopback HTTP round trip plus one Redis round trip, ms (median). */
  baselineMs: number;
}

export interface QueueFigures {
  operations: number;
  /** Checkpoint operations (two steps each) settled per second, through planner, queue, workers and no-op agents. */
  operationsPerSecond: number;
  jobsPerSecond: number;
  /** Physical baseline: bare BullMQ jobs with an empty processor on the same Redis, jobs/s. */
  baselineJobsPerSecond: number;
}


/**
 * The control plane's own speed, with agents that answer at once: a real
 * Redis, a real scheduler (API, evaluation, planner, BullMQ, workers).
 */
export async function benchQueue(log: (m: string) => void, opts: { noticeRuns: number; operations: number }): Promise<{ notice: NoticeFigures; queue: QueueFigures }> {
  const redis = await startRedis();
  const stopRedis = stopOnInterrupt(() => redis.close());
  const policies = await policyDir({ 'guards.yaml': TEST_GUARDS.replace('total: 50', 'total: 100000').replace('perNode: 10', 'perNode: 100000'), 'spot-eviction.yaml': TEST_SPOT_EVICTION });
  const stopPolicies = stopOnInterrupt(() => policies.close());
  // Spot nodes' sessions live on one no-op agent, the target node on another: a move hands them over.
  const agent = await startNoopAgent();
  const stopAgent = stopOnInterrupt(() => agent.close());
  const targetAgent = await startNoopAgent();
  const stopTargetAgent = stopOnInterrupt(() => targetAgent.close());
  const token = randomBytes(24).toString('hex');
  const scheduler = await startScheduler(
    { host: '127.0.0.1', port: 0, token, redisUrl: redis.url, policiesDir: policies.dir, intervalMs: 3_600_000, workers: true, worker: { concurrency: 16 }, queue: { attempts: 3, backoffMs: 200 }, state: {} },
    pino({ level: 'silent' }),
  );
  const stopScheduler = stopOnInterrupt(() => scheduler.close());
  const c = new SchedulerClient(scheduler.url, token);
  try {
    // ---- baseline for the notice: one HTTP round trip and one Redis round trip on loopback
    const probe = connectRedis(redis.url);
    const base: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await fetch(`${agent.url}/healthz`).then((r) => r.text());
      await probe.ping();
      base.push(performance.now() - t0);
    }
    await closeRedis(probe);

    // ---- notice to first agent call: each run its own spot node with one session, and an empty on-demand node
    await c.register({ name: 'target', instanceId: 'i-target', instanceType: 't.big', zone: 'z', lifecycle: 'on-demand', pricePerHour: 0.1, memoryBytes: 2 ** 40, cpus: 64, agentUrl: targetAgent.url, agentToken: targetAgent.token });
    const noticeMs: number[] = [];
    for (let i = 0; i < opts.noticeRuns; i++) {
      const node = `spot-${i}`;
      const id = `s${(0x10000000 + i).toString(16)}`;
      agent.add(id, 'bench');
      await c.register({ name: node, instanceId: `i-${i}`, instanceType: 't.small', zone: 'z', lifecycle: 'spot', pricePerHour: 0.03, memoryBytes: 2 ** 33, cpus: 2, agentUrl: agent.url, agentToken: agent.token });
      await c.pushMetrics(node, { at: new Date().toISOString(), sessions: [{ id, user: 'bench', state: 'running', url: 'http://10.0.0.2:8888/', token: 'x'.repeat(32), rssBytes: 2 ** 28, cpuCores: 0, busy: false, connections: 0, lastActivityAt: null, lastCheckpoint: null }] });
      const first = new Promise<number>((resolve) => {
        agent.onChange = () => {
          agent.onChange = undefined;
          resolve(performance.now());
        };
      });
      const t0 = performance.now();
      await c.notice({ node, action: 'terminate', in: 120 });
      noticeMs.push((await first) - t0);
    }
    log(`control: notice to first agent call, ${opts.noticeRuns} runs`);

    // ---- operations per second: checkpoints of sessions on no-op agents
    const planned: string[] = [];
    const decisions: Decision[] = [];
    for (let i = 0; i < opts.operations; i++) {
      const id = `s${(0x20000000 + i).toString(16)}`;
      targetAgent.add(id, 'bench');
      await scheduler.state.putSession({ id, user: 'bench', node: 'target', state: 'running', url: 'http://10.0.0.2:8888/', token: 'x'.repeat(32), rssBytes: 0, cpuCores: 0, busy: false, connections: 0, lastActivityAt: new Date().toISOString(), lastDisruptionAt: null, hub: null,
      group: null,
      requestedBytes: null, lastCheckpoint: null, updatedAt: new Date().toISOString() });
      decisions.push({ action: 'checkpoint', sessionId: id, source: 'target', target: null, policy: 'bench', reason: 'bench', costPerHour: 0, deadline: null });
      planned.push(id);
    }
    // Each operation logs two actions (planned, then done or failed): a cheap count to poll.
    const before = await scheduler.state.redis.llen(keys.actions);
    const q0 = performance.now();
    const conn = connectRedis(redis.url);
    const queue = new OpsQueue(conn);
    await new Planner(scheduler.state, queue, pino({ level: 'silent' })).plan(decisions);
    await waitFor(
      `${opts.operations} operations to settle`,
      async () => ((await scheduler.state.redis.llen(keys.actions)) - before >= 2 * opts.operations ? true : undefined),
      { timeoutMs: 600_000, intervalMs: 50 },
    );
    const seconds = (performance.now() - q0) / 1000;
    const failed = (await scheduler.state.actions(2 * opts.operations)).filter((a) => a.outcome === 'failed');
    if (failed.length) throw new Error(`bench: ${failed.length} operations failed, e.g. ${failed[0]?.detail}`);
    await queue.close();
    await closeRedis(conn);
    log(`control: ${opts.operations} operations through the queue`);

    // ---- baseline: bare BullMQ, same Redis, empty processor, same concurrency
    const bareConn = connectRedis(redis.url);
    const bare = new Queue('bare', { connection: bareConn, prefix: '{bare}' });
    const jobs = opts.operations * 2;
    let done = 0;
    const workerConn = connectRedis(redis.url);
    const finished = new Promise<void>((resolve) => {
      const w = new Worker('bare', async () => undefined, { connection: workerConn, prefix: '{bare}', concurrency: 16 });
      w.on('completed', () => {
        if (++done === jobs) void w.close().then(() => resolve());
      });
    });
    const b0 = performance.now();
    await bare.addBulk(Array.from({ length: jobs }, (_, i) => ({ name: 'noop', data: { i } })));
    await finished;
    const bareSeconds = (performance.now() - b0) / 1000;
    await bare.close();
    await closeRedis(bareConn);
    await closeRedis(workerConn);
    return {
      notice: { runs: opts.noticeRuns, medianMs: median(noticeMs), maxMs: Math.max(...noticeMs), baselineMs: median(base) },
      queue: { operations: opts.operations, operationsPerSecond: opts.operations / seconds, jobsPerSecond: (opts.operations * 2) / seconds, baselineJobsPerSecond: jobs / bareSeconds },
    };
  } catch (err) {
    if (err instanceof UpstreamError) throw new Error(`bench: the scheduler refused: ${err.message}`);
    throw err;
  } finally {
    await stopScheduler();
    await stopAgent();
    await stopTargetAgent();
    await stopRedis();
    await stopPolicies();
  }
}

