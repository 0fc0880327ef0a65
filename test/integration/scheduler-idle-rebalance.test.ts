import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import type { SchedulerClient } from '../../src/scheduler/scheduler-client.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { operationEnd, sessionCheckpointed, startControlPlane, type TestControlPlane } from '../helpers/control-plane.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import type { TestAgent } from '../helpers/test-agent.js';

/** The voluntary policies on real sessions: metrics from the agent decide, the queue acts. */
describe('the idle and rebalance policies through the scheduler', () => {
  let cp: TestControlPlane;
  let c: SchedulerClient;
  let agents: TestAgent[];

  beforeAll(async () => {
    cp = await startControlPlane({
      policies: {
        // A long cooldown: each session is acted on once in this test.
        'guards.yaml': 'kind: guards\nbudgets: { perNode: 10, total: 50 }\ncooldown: 10m\nquietHours: []\n',
        'idle.yaml': 'kind: idle\nidleFor: 4s\ncpuBelow: 0.5\n',
        'rebalance.yaml': 'kind: rebalance\nprepare: snapshot\n',
      },
      nodes: [{ name: 'node-a', lifecycle: 'on-demand', pricePerHour: 0.1 }],
      config: { intervalMs: 500 },
    });
    ({ client: c, agents } = cp);
  });

  afterAll(async () => {
    await cp?.close();
  });

  it('should checkpoint a session nobody uses, bring it back on demand with its state, and leave a connected one alone', async () => {
    const idle = await c.startSession('ivy');
    const k = await kernelWithState(idle.url, idle.token, 8);
    k.channel.close();
    // A second session with a browser-like websocket open: never idle.
    const used = await c.startSession('joe');
    const kUsed = await kernelWithState(used.url, used.token, 4);

    const checkpointed = await sessionCheckpointed(c, idle.id, 'the idle session to be checkpointed');
    expect(checkpointed.node).toBeNull();
    expect(await agents[0]!.client.findSession(idle.id)).toBeNull();
    const action = (await c.actions()).find((a) => a.sessionId === idle.id && a.outcome === 'done');
    expect(action).toMatchObject({ action: 'checkpoint', policy: 'idle' });
    expect(action?.reason).toMatch(/idle for/);
    expect((await c.getSession(used.id)).state).toBe('running');

    // On demand: restored with its variables.
    const op = await c.restore(idle.id);
    expect((await operationEnd(c, op.id)).status).toBe('completed');
    const back = await c.getSession(idle.id);
    const ch = await KernelChannel.connect(back.url, back.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();

    // A rebalance recommendation snapshots the sessions left running, once (the cooldown holds the restored one back too).
    await c.notice({ node: 'node-a', action: 'rebalance' });
    await waitFor('the snapshot of the used session', async () => ((await c.actions()).some((a) => a.sessionId === used.id && a.action === 'snapshot' && a.outcome === 'done') ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    await sleep(2_000);
    const snaps = (await c.actions(1000)).filter((a) => a.action === 'snapshot');
    expect(snaps.map((a) => [a.sessionId, a.outcome]).sort()).toEqual([
      [used.id, 'done'],
      [used.id, 'planned'],
    ]);
    expect((await c.checkpoints(used.id)).map((x) => x.leftRunning)).toEqual([true]);
    // Left running: the open websocket still answers.
    expect((await c.getSession(used.id)).state).toBe('running');
    expect(await askState(kUsed.channel)).toEqual({ answer: '42', hash: kUsed.hash });
    kUsed.channel.close();
  });
});
