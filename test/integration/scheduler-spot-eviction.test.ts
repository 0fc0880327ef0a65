import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { startMetadataServer, type MetadataServer } from '../../src/cloud/metadata-server.js';
import type { Operation } from '../../src/core/control.js';
import type { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { NodeLanes, nodeLaneState } from '../../src/scheduler/node-lanes.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { TEST_GUARDS, TEST_SPOT_EVICTION, operationEnd, startControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import type { TestAgent } from '../helpers/test-agent.js';

const MiB = 2 ** 20;

for (const kind of ['redis', 'redis-cluster'] as const) {
  describe(`a spot notice, end to end (${kind})`, () => {
    let cp: TestControlPlane;
    let c: SchedulerClient;
    let agents: TestAgent[];
    let imds: MetadataServer;

    beforeAll(async () => {
      // The spot node's own metadata service: on Redis Cluster the notice comes from there, through its agent.
      imds = await startMetadataServer({ instanceId: 'i-0123456789abcdef0', instanceType: 't.spot-a', zone: 'local-1a' });
      cp = await startControlPlane({
        redis: kind,
        policies: { 'guards.yaml': TEST_GUARDS, 'spot-eviction.yaml': TEST_SPOT_EVICTION },
        nodes: [
          // Two lanes off the spot node on one Redis, the workers' default (one) on the other: both ways are run.
          { name: 'spot-a', lifecycle: 'spot', pricePerHour: 0.03, metadataEndpoint: imds.url, movesAtOnce: kind === 'redis' ? 2 : undefined },
          { name: 'ondemand-b', lifecycle: 'on-demand', pricePerHour: 0.1 },
          // A second spot node (the dearest: nothing moves onto it), for a move reached too late.
          ...(kind === 'redis' ? [{ name: 'spot-c', lifecycle: 'spot' as const, pricePerHour: 0.5, movesAtOnce: 1 }] : []),
        ],
        config: { intervalMs: 1_000 },
      });
      ({ client: c, agents } = cp);
    });

    afterAll(async () => {
      await cp?.close();
      await imds?.close();
    });

    it("should move every session off the node, through the policy, the queue and the workers, with its kernels' state", async () => {
      const s1 = await c.startSession('ada', { node: 'spot-a' });
      const s2 = await c.startSession('bob', { node: 'spot-a' });
      expect(s1.node).toBe('spot-a');
      const k1 = await kernelWithState(s1.url, s1.token, 16);
      const k2 = await kernelWithState(s2.url, s2.token, 4);
      k1.channel.close();
      k2.channel.close();
      // The scheduler sees the sessions' memory through the agent's pushes.
      await waitFor('metrics of both sessions', async () => ((await cp.scheduler.state.listSessions()).filter((s) => s.rssBytes > 20 * MiB).length === 2 ? true : undefined), { timeoutMs: 20_000, intervalMs: 100 });

      let planned: Operation[];
      if (kind === 'redis') {
        const r = await c.notice({ node: 'spot-a', action: 'terminate', in: 120 });
        expect(r.notice).toMatchObject({ node: 'spot-a', kind: 'interruption', action: 'terminate' });
        planned = r.planned;
      } else {
        // IMDS -> the agent's watcher -> the scheduler's API -> the policy.
        imds.scheduleInterruption('terminate', 120);
        planned = await waitFor(
          'the migrations the notice leads to',
          async () => {
            const ops = (await c.actions()).filter((a) => a.outcome === 'planned' && a.policy === 'spot-eviction');
            if (ops.length < 2) return undefined;
            return Promise.all(ops.map(async (a) => (await c.operation(a.operation)).operation));
          },
          { timeoutMs: 20_000, intervalMs: 100 },
        );
      }
      expect(planned.map((op) => [op.kind, op.sessionId, op.target]).sort()).toEqual(
        [
          ['migrate', s1.id, 'ondemand-b'],
          ['migrate', s2.id, 'ondemand-b'],
        ].sort(),
      );
      // How many steps held the spot node's lanes at once, looked at while the moves run.
      let mostLeaving = 0;
      let watching = true;
      const watch = (async () => {
        while (watching) {
          mostLeaving = Math.max(mostLeaving, (await nodeLaneState(cp.scheduler.state.redis, 'spot-a')).leaving.length);
          await sleep(10);
        }
      })();
      try {
        for (const op of planned) {
          const end = await operationEnd(c, op.id);
          expect(end.status, JSON.stringify(end.steps.map((s) => s.failedReason))).toBe('completed');
        }
      } finally {
        watching = false;
        await watch;
      }
      // The node's registered figure (2), else the workers' default (1).
      expect(mostLeaving).toBe(kind === 'redis' ? 2 : 1);
      expect((await c.nodes()).find((n) => n.name === 'spot-a')?.movesAtOnce).toBe(kind === 'redis' ? 2 : undefined);
      for (const [s, k] of [
        [s1, k1],
        [s2, k2],
      ] as const) {
        const now = await c.getSession(s.id);
        expect({ node: now.node, state: now.state, url: now.url }).toEqual({ node: 'ondemand-b', state: 'running', url: s.url });
        const ch = await KernelChannel.connect(now.url, now.token, k.kernelId);
        expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
        ch.close();
        // Exactly one node has it: the source forgot it, the target runs it.
        expect(await agents[0]!.client.findSession(s.id)).toBeNull();
        expect((await agents[1]!.client.getSession(s.id)).state).toBe('running');
      }
      const actions = await c.actions();
      expect(actions.filter((a) => a.outcome === 'done' && a.policy === 'spot-eviction')).toHaveLength(2);
      expect(actions.find((a) => a.outcome === 'planned')?.reason).toMatch(/interrupt|notice|spot/i);
    });

    it.runIf(kind === 'redis')('should checkpoint a session to the store instead when its move is reached after its latest start, its state kept', async () => {
      const s = await c.startSession('cy', { node: 'spot-c' });
      const k = await kernelWithState(s.url, s.token, 4);
      k.channel.close();
      await waitFor('its metrics', async () => ((await cp.scheduler.state.findSession(s.id))?.rssBytes ?? 0) > 20 * MiB || undefined, { timeoutMs: 20_000, intervalMs: 100 });
      // The node's one lane taken, as by a move running long before this one.
      const held = await new NodeLanes(cp.scheduler.state.redis, 1, 30_000, 20).take('spot-c', 'long:move');
      let planned: Operation | undefined;
      try {
        // 5 s of margin, moves at 200 MB/s + 3 s (TEST_SPOT_EVICTION): a move, to start within some 5 s.
        planned = (await c.notice({ node: 'spot-c', action: 'terminate', in: 14 })).planned.find((op) => op.sessionId === s.id);
        expect(planned?.kind).toBe('migrate');
        const startBy = Date.parse(planned?.decision.startBy ?? '');
        expect(startBy).toBeGreaterThan(Date.now());
        await sleep(startBy - Date.now() + 300);
      } finally {
        await held.release();
      }
      const end = await operationEnd(c, planned!.id);
      expect(end.status, JSON.stringify(end.steps.map((x) => x.failedReason))).toBe('completed');
      expect(await c.getSession(s.id)).toMatchObject({ state: 'checkpointed', node: null });
      for (const a of agents) expect((await a.client.findSession(s.id))?.state ?? 'gone').not.toBe('running');
      const done = (await c.actions()).find((a) => a.operation === planned!.id && a.outcome === 'done');
      expect(done).toMatchObject({ action: 'checkpoint', target: null, source: 'spot-c' });
      expect(done?.detail).toMatch(new RegExp(`after the latest start that ended in time .*: checkpointed to the store instead of moved to ${planned!.target}$`));
      // Nothing lost: restored from the store, the same kernel answers with its state.
      const restore = await c.restore(s.id, 'ondemand-b');
      expect((await operationEnd(c, restore.id)).status).toBe('completed');
      const back = await c.getSession(s.id);
      const ch = await KernelChannel.connect(back.url, back.token, k.kernelId);
      expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
      ch.close();
    });
  });
}
