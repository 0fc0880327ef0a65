import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/agent-client.js';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { LocalProvider, localHostSpecs } from '../../src/cloud/local-provider.js';
import type { HostRecord } from '../../src/core/cloud.js';
import { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { startScheduler, type RunningScheduler } from '../../src/scheduler/scheduler.js';
import { waitFor } from '../../src/util/exec.js';
import { TEST_GUARDS, TEST_SPOT_EVICTION, nodesRegistered, operationEnd, policyDir, sessionCheckpointed } from '../helpers/control-plane.js';
import { askState, kernelWithState, type KernelState } from '../helpers/kernel.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

/**
 * Three test hosts (network namespaces, each with its agent and metadata
 * endpoint), a scheduler on the hosts' segment: a spot notice scheduled on
 * the spot host's metadata endpoint empties it before its deadline.
 */
describe('a spot notice on a local test host, end to end', () => {
  let stateDir: string;
  let provider: LocalProvider;
  let redis: TestRedis;
  let scheduler: RunningScheduler;
  let policies: Awaited<ReturnType<typeof policyDir>>;
  let hosts: HostRecord[];
  const token = randomBytes(24).toString('hex');
  let c: SchedulerClient;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'hubshift-local-'));
    const tag = randomBytes(1).toString('hex');
    const base = { stateDir, bridge: `hslh${tag}`, subnet: `10.${232 + (parseInt(tag, 16) % 20)}.0.0/16`, pushIntervalSeconds: 1, metadataIntervalSeconds: 1, logLevel: 'warn' };
    // The scheduler listens on the segment's gateway, so the segment comes first.
    const segment = new LocalProvider(base);
    provider = segment;
    await segment.prepareSegment();
    redis = await startRedis();
    policies = await policyDir({ 'guards.yaml': TEST_GUARDS, 'spot-eviction.yaml': TEST_SPOT_EVICTION });
    scheduler = await startScheduler(
      // A node the cloud took is forgotten 8 s past its deadline (the agents push every second).
      { host: segment.gateway, port: 0, token, redisUrl: redis.url, policiesDir: policies.dir, intervalMs: 1_000, workers: true, worker: { lockMs: 10_000, concurrency: 4 }, queue: { attempts: 3, backoffMs: 500 }, state: { nodeSilentAfterMs: 8_000 } },
      pino({ level: process.env.HUBSHIFT_TEST_LOG ?? 'silent' }),
    );
    const tokenFile = join(policies.dir, 'scheduler.token');
    await writeFile(tokenFile, token);
    provider = new LocalProvider({ ...base, scheduler: { url: scheduler.url, tokenFile } });
    c = new SchedulerClient(scheduler.url, token);
    hosts = await provider.create(localHostSpecs(3, 1));
    await nodesRegistered(c, hosts.map((h) => h.name));
  });

  afterAll(async () => {
    await provider?.removeAll();
    await scheduler?.close();
    await redis?.close();
    await policies?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('should move every session off the spot host before the deadline, kernels and an open websocket intact', async () => {
    const spot = hosts.find((h) => h.lifecycle === 'spot')!;
    expect(spot.name).toBe('host-1');
    const started = [];
    const kernels: KernelState[] = [];
    for (const user of ['ana', 'ben', 'cai']) {
      const s = await c.startSession(user, { node: spot.name });
      started.push(s);
      kernels.push(await kernelWithState(s.url, s.token, 16));
    }
    // One client stays connected the whole time: ana's kernel websocket.
    for (const k of kernels.slice(1)) k.channel.close();
    await waitFor('the scheduler to see the sessions running on host-1', async () => ((await c.listSessions()).filter((s) => s.node === spot.name && s.state === 'running').length === 3 ? true : undefined), {
      timeoutMs: 20_000,
      intervalMs: 100,
    });

    const scheduled = (await provider.notice(spot.name, 'terminate', 120)) as { time: string };
    const deadline = Date.parse(scheduled.time);
    // Meanwhile the evacuation's report says who is leaving the node and who waits for its lane.
    let noticeId: string | undefined;
    const seen = { leaving: 0, waiting: 0, twoLeaving: false };
    const moved = await waitFor(
      'every session to run on another host',
      async () => {
        noticeId ??= (await c.notices()).find((n) => n.node === spot.name && n.kind === 'interruption')?.id;
        if (noticeId) {
          const lanes = (await c.evacuation(noticeId)).sessions.map((x) => x.lane?.state);
          const leaving = lanes.filter((x) => x === 'leaving').length;
          seen.leaving = Math.max(seen.leaving, leaving);
          seen.waiting = Math.max(seen.waiting, lanes.filter((x) => x === 'waiting').length);
          seen.twoLeaving ||= leaving > 1;
        }
        const all = await c.listSessions();
        return all.every((s) => s.node !== spot.name && s.state === 'running' && s.operation === null) ? all : undefined;
      },
      { timeoutMs: 110_000, intervalMs: 200 },
    );
    expect(Date.now()).toBeLessThan(deadline);
    expect(seen).toEqual({ leaving: 1, waiting: expect.any(Number), twoLeaving: false });
    expect(seen.waiting).toBeGreaterThan(0);
    for (const [i, s] of started.entries()) {
      const now = moved.find((x) => x.id === s.id)!;
      expect(now.url).toBe(s.url);
      const ch = await KernelChannel.connect(now.url, now.token, kernels[i]!.kernelId);
      expect(await askState(ch)).toEqual({ answer: '42', hash: kernels[i]!.hash });
      ch.close();
    }
    // The client connected before the notice never reconnected: its socket moved with the session.
    expect(await askState(kernels[0]!.channel)).toEqual({ answer: '42', hash: kernels[0]!.hash });
    kernels[0]!.channel.close();
    // The spot host has nothing left.
    const spotAgent = new AgentClient(spot.agentUrl, (await readFile(spot.tokenFile, 'utf8')).trim());
    expect(await spotAgent.listSessions()).toEqual([]);
    // Its agent, linked to the scheduler, kept no lent addresses (the scheduler avoids them; a lent record whose
    // holder vanished with its host would hold its address for ever).
    expect(await readdir(join(spot.dataDir, 'lent')).catch(() => [])).toEqual([]);
    // The evacuation's report: every session moved, each before the deadline, nothing left.
    const notice = (await c.notices()).find((n) => n.node === spot.name && n.kind === 'interruption')!;
    const report = await c.evacuation(notice.id);
    expect(report.sessions.map((x) => [x.sessionId, x.outcome]).sort()).toEqual(started.map((s) => [s.id, 'done']).sort());
    expect(report.sessions.every((x) => (x.marginSeconds ?? -1) > 0)).toBe(true);
    expect(report.left).toEqual([]);
    // One at a time off the node (--moves-per-node 1): each session froze only once the one before ran on its target.
    const moves = (await c.actions(100)).filter((a) => a.action === 'migrate' && a.source === spot.name && a.outcome === 'done');
    expect(moves).toHaveLength(started.length);
    const frozen = [];
    for (const a of moves) {
      const step = (await c.operation(a.operation)).steps.find((x) => x.step === 'move');
      const r = z.object({ frozenAt: z.string(), downtimeSeconds: z.number() }).parse(step?.result);
      frozen.push({ at: Date.parse(r.frozenAt), downtimeMs: r.downtimeSeconds * 1000 });
    }
    frozen.sort((a, b) => a.at - b.at);
    for (let i = 1; i < frozen.length; i++) expect(frozen[i]!.at).toBeGreaterThanOrEqual(frozen[i - 1]!.at + frozen[i - 1]!.downtimeMs);
  });

  it('should bring a session that went with a host the cloud took back from its last checkpoint, and mark one with none failed', async () => {
    const doomed = hosts.find((h) => h.name === 'host-3')!;
    const others = (await c.listSessions()).filter((x) => x.node === doomed.name);
    const s = await c.startSession('dee', { node: doomed.name });
    const k = await kernelWithState(s.url, s.token, 16);
    // A snapshot (a checkpoint that leaves the session running), then work the snapshot does not hold.
    expect((await operationEnd(c, (await c.checkpoint(s.id, true)).id)).status).toBe('completed');
    const snapshot = (await c.getSession(s.id)).lastCheckpoint;
    expect(snapshot).not.toBeNull();
    expect((await k.channel.execute('x = 99')).status).toBe('ok');
    k.channel.close();
    // The cloud takes the host before any evacuation could run: its agent dies first, then the notice comes.
    process.kill(doomed.agentPid!, 'SIGKILL');
    await provider.removeHost(doomed.name);
    await c.notice({ node: doomed.name, action: 'terminate', in: 1 });
    // Past the deadline by more than nodeSilentAfterMs, and once the evacuation planned at the notice failed for good.
    const back = await sessionCheckpointed(c, s.id, 'the scheduler to forget host-3 and put its sessions back at their checkpoints');
    const taken = (await c.checkpoints(s.id)).find((x) => x.checkpoint === snapshot)!.at;
    expect(back).toMatchObject({ node: null, lastCheckpoint: snapshot, lostWithNode: { node: doomed.name, checkpoint: snapshot, checkpointAt: taken } });
    expect((await c.nodes()).map((n) => n.name)).not.toContain(doomed.name);
    // Sessions moved there by the evacuation above had no checkpoint: marked failed.
    for (const o of others) expect(await c.getSession(o.id)).toMatchObject(o.lastCheckpoint === null ? { state: 'failed', node: null } : { state: 'checkpointed', node: null });
    // Its restore (what a request through the hub's gateway asks for) brings it back as it was at the snapshot.
    expect((await operationEnd(c, (await c.restore(s.id, 'host-2')).id)).status).toBe('completed');
    const restored = await c.getSession(s.id);
    expect(restored).toMatchObject({ state: 'running', node: 'host-2', url: s.url, lostWithNode: null });
    const ch = await KernelChannel.connect(restored.url, restored.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
  });
});
