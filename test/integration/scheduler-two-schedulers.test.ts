import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { waitFor } from '../../src/util/exec.js';
import { TEST_GUARDS, TEST_SPOT_EVICTION, nodesRegistered, policyDir, spawnHubshift, startNodeAgents, type HubshiftProcess } from '../helpers/control-plane.js';
import { startRedis, startRedisCluster, type TestRedis } from '../helpers/redis.js';
import type { TestAgent } from '../helpers/test-agent.js';

for (const kind of ['redis', 'redis-cluster'] as const) {
  describe(`two scheduler processes sharing one ${kind}`, () => {
    let redis: TestRedis;
    const schedulers: HubshiftProcess[] = [];
    let agents: TestAgent[] = [];
    let policies: Awaited<ReturnType<typeof policyDir>>;
    const token = randomBytes(24).toString('hex');
    let clients: SchedulerClient[] = [];

    beforeAll(async () => {
      redis = kind === 'redis' ? await startRedis() : await startRedisCluster();
      policies = await policyDir({ 'guards.yaml': TEST_GUARDS, 'spot-eviction.yaml': TEST_SPOT_EVICTION });
      // Not a *.yaml: the policy loader leaves it alone, and it goes with the directory.
      const tokenFile = join(policies.dir, 'scheduler.token');
      await writeFile(tokenFile, token, { mode: 0o600 });
      for (let i = 0; i < 2; i++) {
        schedulers.push(
          await spawnHubshift(
            ['scheduler', '--port', '0', '--redis', redis.url, '--policies', policies.dir, '--token-file', tokenFile, '--interval', '0.5', '--lock-seconds', '5', '--log-level', process.env.HUBSHIFT_TEST_LOG ?? 'warn'],
            /listening on (http:\/\/\S+)/,
          ),
        );
      }
      clients = schedulers.map((s) => new SchedulerClient(s.url as string, token));
      agents = await startNodeAgents({ url: schedulers[0]!.url as string, token }, [
        { name: 'spot-a', lifecycle: 'spot', pricePerHour: 0.03 },
        { name: 'ondemand-b', lifecycle: 'on-demand', pricePerHour: 0.1 },
      ]);
      await nodesRegistered(clients[1]!, ['spot-a', 'ondemand-b']);
    });

    afterAll(async () => {
      for (const s of schedulers) await s.stop();
      for (const a of agents) await a.cleanup();
      await redis?.close();
      await policies?.close();
    });

    it('should apply one decision once, however many schedulers reach it', async () => {
      const sessions = [await clients[0]!.startSession('cy', { node: 'spot-a' }), await clients[1]!.startSession('di', { node: 'spot-a' })];
      // Both schedulers see both sessions (one state).
      for (const cl of clients) expect((await cl.listSessions()).map((s) => s.id).sort()).toEqual(sessions.map((s) => s.id).sort());
      const event = {
        version: '0',
        id: randomBytes(8).toString('hex'),
        'detail-type': 'EC2 Spot Instance Interruption Warning',
        source: 'aws.ec2',
        account: '123456789012',
        time: new Date().toISOString(),
        region: 'us-east-1',
        resources: [],
        detail: { 'instance-id': agentsInstanceId(), 'instance-action': 'terminate' },
      };
      // The same event delivered to both at once, as a fan-out would.
      await Promise.all(clients.map((cl) => cl.notice(event)));
      await waitFor(
        'both migrations to end',
        async () => {
          const acts = await clients[0]!.actions(1000);
          return acts.filter((a) => a.outcome !== 'planned').length >= 2 ? acts : undefined;
        },
        { timeoutMs: 90_000, intervalMs: 200 },
      );
      // A little longer: a duplicate would show up now.
      await new Promise((r) => setTimeout(r, 2_000));
      const acts = await clients[1]!.actions(1000);
      for (const s of sessions) {
        const mine = acts.filter((a) => a.sessionId === s.id);
        expect(mine.map((a) => a.outcome).sort(), JSON.stringify(mine)).toEqual(['done', 'planned']);
        const running = [];
        for (const a of agents) if ((await a.client.findSession(s.id))?.state === 'running') running.push(a);
        expect(running).toEqual([agents[1]]);
      }
      const jobs = await clients[0]!.jobs(undefined, 1000);
      expect(new Set(jobs.map((j) => j.operation)).size).toBe(2);
      expect(jobs.every((j) => j.state === 'completed')).toBe(true);
    });

    function agentsInstanceId(): string {
      return agents[0]!.config.scheduler?.node.instanceId as string;
    }
  });
}
