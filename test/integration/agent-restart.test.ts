import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { pino } from 'pino';
import { AgentClient } from '../../src/agent/agent-client.js';
import { startAgent } from '../../src/agent/agent.js';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { findStoppedCopy, recordStoppedCopy } from '../../src/agent/stopped-copies.js';
import { isAlive } from '../../src/util/proc.js';
import { waitFor } from '../../src/util/exec.js';
import { UpstreamError } from '../../src/core/errors.js';
import { netnsPath } from '../../src/agent/network.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';
import { holdAtPostDump } from '../helpers/action-script.js';

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

  it('should, stopped with a drain (a stop signal), refuse new operations, finish and answer a checkpoint under way, and leave it to the next agent', async () => {
    // The dump held longer than the answers' grace at close (2 s): only waiting for it gets its answer out.
    const dir = await mkdtemp(join(tmpdir(), 'hubshift-drain-'));
    const script = join(dir, 'hold.sh');
    await writeFile(script, `#!/bin/sh\n${holdAtPostDump(3)}exit 0\n`, { mode: 0o755 });
    const first = await startTestAgent({ criuActionScript: script });
    agents.push(first);
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const s = await first.client.startSession('mae');
    const k = await kernelWithState(s.url, s.token, 64);
    k.channel.close();
    const checkpoint = first.client.checkpoint(s.id);
    await waitFor('the checkpoint to be under way', async () => (first.agent.ctx.registry.underWay > 0 ? true : undefined), { timeoutMs: 10_000, intervalMs: 5 });
    const drained = first.agent.drain(60_000);
    const refused = await first.client.startSession('ned').then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(UpstreamError);
    expect((refused as UpstreamError).status).toBe(503);
    expect((refused as UpstreamError).message).toMatch(/this agent is stopping/);
    // Answered, not cut: the drain waited for it.
    const ck = await checkpoint;
    await drained;
    expect(first.agent.ctx.registry.underWay).toBe(0);
    await expect(fetch(`${first.agent.url}/healthz`)).rejects.toThrow();

    const second = await startAgent(first.config, pino({ level: 'silent' }));
    try {
      const client = new AgentClient(second.url, first.token);
      expect(await client.getSession(s.id)).toMatchObject({ state: 'checkpointed', lastCheckpoint: ck.checkpoint });
      // The refused start left nothing behind.
      expect((await client.listSessions()).map((x) => x.user)).toEqual(['mae']);
      const back = await client.restore(ck.checkpoint);
      const ch = await KernelChannel.connect(back.url, back.token, k.kernelId);
      expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
      ch.close();
    } finally {
      await second.close();
    }
  });

  it("should leave a checkpoint being restored to a newer checkpoint's retention, and expire it after", async () => {
    const a = await startTestAgent({ keepCheckpoints: 2 });
    agents.push(a);
    const s = await a.client.startSession('kit');
    const next = async (): Promise<string> => {
      const c = await a.client.checkpoint(s.id);
      await a.client.restore(c.checkpoint);
      return c.checkpoint;
    };
    const listed = async (): Promise<string[]> => (await a.client.listCheckpoints()).sort();
    const first = await next();
    const x = await next();
    // As a restore of `first` marks it while it reads it from the store (restore-service.ts).
    a.agent.ctx.reading.add(first);
    const y = await next();
    const z = await next();
    // Retention ran after z (it expired x, the other one past the newest two) and left the one being read.
    await waitFor('the retention after z', async () => (!(await listed()).includes(x) ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
    expect(await listed()).toEqual([first, y, z].sort());
    a.agent.ctx.reading.delete(first);
    const w = await next();
    await waitFor('the retention after w', async () => ((await listed()).length === 2 ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
    expect(await listed()).toEqual([z, w].sort());
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
