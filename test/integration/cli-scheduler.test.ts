import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeBridge } from '../../src/agent/network.js';
import { waitFor } from '../../src/util/exec.js';
import { Ec2QueryEndpoint, ec2Response, instanceTypeItem } from '../helpers/ec2-query-endpoint.js';
import { TEST_GUARDS, runHubshift as hubshift, spawnHubshift, startControlPlane, type HubshiftProcess, type TestControlPlane } from '../helpers/control-plane.js';

describe('the hubshift command against a scheduler', () => {
  let cp: TestControlPlane;
  let conn: string[];

  beforeAll(async () => {
    cp = await startControlPlane({
      policies: { 'guards.yaml': TEST_GUARDS },
      nodes: [
        { name: 'node-a', lifecycle: 'spot', pricePerHour: 0.03 },
        { name: 'node-b', lifecycle: 'on-demand', pricePerHour: 0.1 },
      ],
    });
    const tokenFile = join(cp.policiesDir, 'scheduler.token');
    await writeFile(tokenFile, `${cp.token}\n`);
    conn = ['--scheduler', cp.scheduler.url, '--token-file', tokenFile, '--json'];
  });

  afterAll(async () => {
    await cp?.close();
  });

  it('should place, show, checkpoint, restore and migrate a session, each printing JSON', async () => {
    const start = await hubshift(['session', 'start', '--user', 'eve', '--node', 'node-a', ...conn]);
    expect(start.code, start.stderr).toBe(0);
    const s = JSON.parse(start.stdout) as { id: string };
    const show = JSON.parse((await hubshift(['session', 'show', s.id, ...conn])).stdout) as Record<string, unknown>;
    expect(show).toMatchObject({ id: s.id, node: 'node-a', state: 'running' });
    expect(Object.keys(show)).toEqual(expect.arrayContaining(['id', 'node', 'state', 'url', 'token']));

    const ck = await hubshift(['checkpoint', s.id, ...conn]);
    expect(ck.code, ck.stderr).toBe(0);
    expect(JSON.parse(ck.stdout)).toMatchObject({ status: 'completed', session: { id: s.id, state: 'checkpointed', node: null } });

    const rs = await hubshift(['restore', s.id, '--node', 'node-b', ...conn]);
    expect(rs.code, rs.stderr + rs.stdout).toBe(0);
    expect(JSON.parse(rs.stdout)).toMatchObject({ status: 'completed', session: { state: 'running', node: 'node-b' } });

    const mv = await hubshift(['migrate', s.id, '--to', 'node-a', ...conn]);
    expect(mv.code, mv.stderr).toBe(0);
    expect(JSON.parse(mv.stdout)).toMatchObject({ status: 'completed', session: { state: 'running', node: 'node-a' } });

    const cks = await cp.client.checkpoints(s.id);
    // The migration streamed agent to agent: only the checkpoint went to the store.
    expect(cks.map((x) => [x.node, x.leftRunning])).toEqual([['node-a', false]]);
    const ls = JSON.parse((await hubshift(['session', 'ls', ...conn])).stdout) as { sessions: { id: string; node: string }[] };
    expect(ls.sessions.map((x) => [x.id, x.node])).toEqual([[s.id, 'node-a']]);

    const jobs = JSON.parse((await hubshift(['jobs', ...conn])).stdout) as { jobs: { operation: string; state: string }[] };
    expect(new Set(jobs.jobs.map((j) => j.operation)).size).toBe(3);
    expect(JSON.parse((await hubshift(['jobs', '--state', 'failed', ...conn])).stdout)).toEqual({ jobs: [] });
    const actions = JSON.parse((await hubshift(['jobs', '--actions', ...conn])).stdout) as { actions: { outcome: string; policy: string }[] };
    expect(actions.actions.filter((a) => a.outcome === 'done' && a.policy === 'manual')).toHaveLength(3);
  });

  it('should post notices and print the plan', async () => {
    const n = await hubshift(['notice', 'node-b', '--action', 'rebalance', ...conn]);
    expect(n.code, n.stderr).toBe(0);
    expect(JSON.parse(n.stdout)).toMatchObject({ notice: { node: 'node-b', kind: 'rebalance', deadline: null } });
    // With only guards in force nothing moves: the report says what is left on the node.
    const wait = await hubshift(['notice', 'node-a', '--action', 'terminate', '--in', '60', '--wait', ...conn]);
    expect(wait.code, wait.stderr).toBe(0);
    const report = JSON.parse(wait.stdout) as { notice: { node: string }; sessions: unknown[]; left: string[] };
    expect(report.notice.node).toBe('node-a');
    expect(report.sessions).toEqual([]);
    expect(report.left).toEqual((await cp.client.listSessions()).filter((x) => x.node === 'node-a' && x.state === 'running').map((x) => x.id));
    const plan = await hubshift(['plan', ...conn]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout)).toHaveProperty('decisions');
  });

  it('should register a node from the agent command line, with its type, lifecycle, price, moves at once and the link EC2 gives its type', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'hubshift-cli-agent-'));
    const tag = randomBytes(2).toString('hex');
    const bridge = `hsl${tag}`;
    const tokenFile = join(cp.policiesDir, 'scheduler.token');
    // EC2's DescribeInstanceTypes on loopback, answering for m7i.large as AWS documents it; the agent's SDK client is
    // pointed at it the way AWS's SDKs allow (AWS_ENDPOINT_URL_EC2), with the instance role's credentials stood in for.
    const ec2 = new Ec2QueryEndpoint().on('DescribeInstanceTypes', () =>
      ec2Response('DescribeInstanceTypes', `<instanceTypeSet>${instanceTypeItem('m7i.large', 2, 8192, { performance: 'Up to 12.5 Gigabit', baselineGbps: 0.781, peakGbps: 12.5 })}</instanceTypeSet>`),
    );
    await ec2.start();
    const awsEnv = { AWS_ENDPOINT_URL_EC2: ec2.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
    let agent: HubshiftProcess | undefined;
    try {
      agent = await spawnHubshift(
        ['agent', '--token-file', join(dataDir, 'agent.token'), '--port', '0', '--data-dir', dataDir, '--bridge', bridge, '--subnet', `10.222.${parseInt(tag, 16) % 250}.0/24`, '--node', 'cli-node', '--scheduler', cp.scheduler.url, '--scheduler-token-file', tokenFile, '--node-type', 'm7i.large', '--lifecycle', 'spot', '--price', '0.0401', '--memory', String(2 ** 33), '--moves-at-once', '3', '--network-gbps', 'auto', '--push-interval', '0.5', '--log-level', 'warn'],
        /listening on (http:\/\/\S+)/,
        30_000,
        awsEnv,
      );
      const node = await waitFor('cli-node to register', async () => (await cp.client.nodes()).find((n) => n.name === 'cli-node'), { timeoutMs: 20_000, intervalMs: 100 });
      // The card's peak, not its 0.781 baseline: a checkpoint's parts and an evacuation are bursts the credits carry.
      expect(node).toMatchObject({ instanceType: 'm7i.large', lifecycle: 'spot', pricePerHour: 0.0401, memoryBytes: 2 ** 33, movesAtOnce: 3, networkGbps: 12.5, agentUrl: agent.url });
      expect(ec2.calls('DescribeInstanceTypes').map((p) => p['InstanceType.1'])).toEqual(['m7i.large']);
      const auto = await hubshift(['agent', '--token-file', join(dataDir, 'agent.token'), '--network-gbps', 'auto']);
      expect(auto.code).toBe(2);
      expect(auto.stderr).toMatch(/--network-gbps auto reads the link of the node's instance type from EC2: give --node-type/);
      const half = await hubshift(['agent', '--token-file', join(dataDir, 'agent.token'), '--node', 'x']);
      expect(half.code).toBe(2);
      expect(half.stderr).toMatch(/--scheduler, --node and --scheduler-token-file go together/);
    } finally {
      await agent?.stop();
      await ec2.stop();
      await removeBridge(bridge).catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('should refuse what is wrong with a message and a non-zero exit', async () => {
    const unknown = await hubshift(['notice', 'node-zz', '--action', 'terminate', ...conn]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/node-zz.*not registered/);
    const badAction = await hubshift(['notice', 'node-a', '--action', 'explode', ...conn]);
    expect(badAction.code).toBe(2);
    expect(badAction.stderr).toMatch(/explode/);
    const noTarget = await hubshift(['session', 'ls', '--token-file', '/dev/null']);
    expect(noTarget.code).toBe(2);
    expect(noTarget.stderr).toMatch(/--agent URL .* or --scheduler URL/);
    const both = await hubshift(['session', 'ls', '--agent', 'http://127.0.0.1:1', ...conn]);
    expect(both.stderr).toMatch(/not both/);
    // Less than one lane off a node would hold every move off it forever.
    const noLane = await hubshift(['worker', '--moves-per-node', '0.4']);
    expect(noLane.code).toBe(2);
    expect(noLane.stderr).toMatch(/--moves-per-node 0.4 is not a whole number of at least 1/);
    // A node's own figure likewise, and bounded (the scheduler refuses more).
    const agentNoLane = await hubshift(['agent', '--moves-at-once', '0', '--token-file', '/dev/null']);
    expect(agentNoLane.code).toBe(2);
    expect(agentNoLane.stderr).toMatch(/--moves-at-once 0 is not a whole number of at least 1/);
    const agentLanes = await hubshift(['agent', '--moves-at-once', '65', '--token-file', '/dev/null']);
    expect(agentLanes.stderr).toMatch(/--moves-at-once 65 is more than 64/);
    // Counts are whole numbers: 2.5 steps at once, or hosts, are refused rather than rounded somewhere.
    const half = await hubshift(['worker', '--concurrency', '2.5']);
    expect(half.stderr).toMatch(/--concurrency 2.5 is not a whole number of at least 1/);
    const hosts = await hubshift(['local', 'up', '--hosts', '1.5']);
    expect(hosts.code).toBe(2);
    expect(hosts.stderr).toMatch(/--hosts 1.5 is not a whole number of at least 1/);
  });

  it('should run the session gateway on its own, and in the scheduler with --gateway-port', async () => {
    const tokenFile = join(cp.policiesDir, 'scheduler.token');
    let gw: HubshiftProcess | undefined;
    let sched: HubshiftProcess | undefined;
    try {
      gw = await spawnHubshift(['gateway', '--scheduler', cp.scheduler.url, '--token-file', tokenFile, '--port', '0', '--hold-timeout', '5'], /gateway listening on (http:\/\/\S+)/);
      expect(await (await fetch(`${gw.url}/_hubshift/healthz`)).json()).toEqual({ ok: true, waiting: 0 });
      const none = await fetch(`${gw.url}/user/nobody/tree`, { headers: { Accept: 'text/html' } });
      expect(none.status).toBe(404);
      expect(await none.text()).toMatch(/no hubshift session serves \/user\/nobody\/tree/);

      // The scheduler has no gateway of its own: the spawner is told to set HUBSHIFT_GATEWAY_URL.
      await expect(cp.client.gateway()).rejects.toThrow(/runs no session gateway/);
      sched = await spawnHubshift(
        ['scheduler', '--token-file', tokenFile, '--port', '0', '--redis', cp.redis.url, '--policies', cp.policiesDir, '--workers', '0', '--gateway-port', '0', '--gateway-url', 'http://gw.example.internal:7303', '--log-level', 'warn'],
        /gateway listening on (http:\/\/\S+)/,
      );
      const api = /scheduler listening on (http:\/\/\S+)/.exec(sched.output())![1]!;
      const told = await fetch(`${api}/v1/gateway`, { headers: { Authorization: `Bearer ${cp.token}` } });
      expect(await told.json()).toEqual({ url: 'http://gw.example.internal:7303' });
      expect((await fetch(`${sched.url}/_hubshift/healthz`)).status).toBe(200);

      const orphan = await hubshift(['scheduler', '--token-file', tokenFile, '--hub-api-url', 'http://127.0.0.1:1/hub/api']);
      expect(orphan.code).toBe(2);
      expect(orphan.stderr).toMatch(/give --gateway-port too/);
      const bad = await hubshift(['gateway', '--scheduler', cp.scheduler.url, '--token-file', tokenFile, '--hub-api-url', 'ftp://x']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/--hub-api-url ftp:\/\/x is not an http\(s\) URL/);
    } finally {
      await gw?.stop();
      await sched?.stop();
    }
  });
});
