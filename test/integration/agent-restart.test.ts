import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { AgentClient } from '../../src/agent/agent-client.js';
import { startAgent } from '../../src/agent/agent.js';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { findStoppedCopy, recordStoppedCopy } from '../../src/agent/stopped-copies.js';
import { isAlive } from '../../src/util/proc.js';
import { netnsPath } from '../../src/agent/network.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

describe('an agent that restarts', () => {
  const agents: TestAgent[] = [];
  afterAll(async () => {
    for (const a of agents.reverse()) await a.cleanup();
  });

  it('should take over its running and checkpointed sessions, and settle one caught mid-operation', async () => {
    const first = await startTestAgent();
    agents.push(first);
    const live = await first.client.startSession('fay');
    const k = await kernelWithState(live.url, live.token, 8);
    const parked = await first.client.startSession('gus');
    const ck = await first.client.checkpoint(parked.id);
    // A session whose record says a checkpoint was under way when the agent died.
    const caught = await first.client.startSession('hal');
    await first.agent.ctx.registry.update(caught.id, { state: 'checkpointing' });
    // Its stop-and-copy move had not reached its commit: the copy here is the session.
    await recordStoppedCopy(first.config.dataDir, { sessionId: caught.id, sessionPid: caught.pid as number, target: 'http://10.0.0.9:7301', committing: false });
    // One whose stop-and-copy move was being committed: the target runs it, or keeps it in its store.
    const handed = await first.client.startSession('ida');
    await first.agent.ctx.registry.update(handed.id, { state: 'checkpointing' });
    await recordStoppedCopy(first.config.dataDir, { sessionId: handed.id, sessionPid: handed.pid as number, target: 'http://10.0.0.9:7301', committing: true });
    await first.agent.close();

    // The sessions outlive the agent.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });

    const second = await startAgent(first.config, pino({ level: 'silent' }));
    const client = new AgentClient(second.url, first.token);
    try {
      const byId = new Map((await client.listSessions()).map((s) => [s.id, s]));
      expect(byId.get(live.id)).toMatchObject({ state: 'running', pid: live.pid, url: live.url });
      expect(byId.get(parked.id)).toMatchObject({ state: 'checkpointed', lastCheckpoint: ck.checkpoint });
      expect(byId.get(caught.id)).toMatchObject({ state: 'running', pid: caught.pid });
      expect(await findStoppedCopy(first.config.dataDir, caught.id)).toBeNull();
      // Killed, not resumed, and forgotten with its record.
      expect(byId.has(handed.id)).toBe(false);
      expect(await isAlive(handed.pid as number)).toBe(false);
      expect(await findStoppedCopy(first.config.dataDir, handed.id)).toBeNull();
      // Its namespace's name went with it (it still named the namespace the session had here).
      expect(existsSync(netnsPath(handed.id))).toBe(false);

      // The new agent can act on what the old one started.
      const again = await client.checkpoint(live.id, true);
      expect(again.bytes).toBeGreaterThan(8 * 2 ** 20);
      const back = await client.restore(ck.checkpoint);
      expect(back.state).toBe('running');
      expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    } finally {
      k.channel.close();
      // cleanup() of the first kills every session the registry knows; the second shares its data dir.
      await second.close();
    }
  });

  it('should let a fresh agent sharing the store restore a checkpoint another agent took', async () => {
    const first = await startTestAgent();
    agents.push(first);
    const second = await startTestAgent({ storeUrl: first.config.storeUrl, bridge: first.config.bridge });
    agents.push(second);
    const s = await first.client.startSession('lia');
    const k = await kernelWithState(s.url, s.token, 8);
    k.channel.close();
    const c = await first.client.checkpoint(s.id);
    // The second agent has done nothing yet: this restore is its first operation.
    const r = await second.client.restore(c.checkpoint);
    expect({ id: r.id, url: r.url, state: r.state }).toEqual({ id: s.id, url: s.url, state: 'running' });
    const ch = await KernelChannel.connect(r.url, r.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
  });
});
