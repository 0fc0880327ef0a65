import { stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsPath } from '../../src/agent/network.js';
import { UpstreamError } from '../../src/core/errors.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { isAlive } from '../../src/util/proc.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startS3, type TestS3 } from '../helpers/s3-server.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

describe('a checkpoint whose store fails after the session was stopped', () => {
  let s3: TestS3;
  let t: TestAgent;
  beforeAll(async () => {
    s3 = await startS3();
    // A bucket that does not exist: every upload fails after criu has dumped and stopped the session.
    t = await startTestAgent({ storeUrl: 's3://no-such-bucket/x', s3Endpoint: s3.endpoint });
  });
  afterAll(async () => {
    await t?.cleanup();
    await s3?.close();
  });

  it('should resume the stopped session where it was, state intact, and say why the checkpoint failed', async () => {
    const s = await t.client.startSession('erin');
    const k = await kernelWithState(s.url, s.token, 16);
    let failure: UpstreamError | undefined;
    try {
      await t.client.checkpoint(s.id);
    } catch (err) {
      failure = err as UpstreamError;
    }
    expect(failure?.upstreamCode).toBe('store_failed');
    expect(failure?.message).toMatch(/uploading blob .+ to s3:\/\/no-such-bucket\/x \(user [a-z]+\) failed/);
    const after = await t.client.getSession(s.id);
    expect(after.state).toBe('running');
    expect(after.url).toBe(s.url);
    // The same processes, running again: criu left them stopped, and they are killed only after a commit.
    expect(after.pid).toBe(s.pid);
    expect(await isAlive(after.pid as number)).toBe(true);
    expect(await hasLockRules(`/proc/${after.pid}/ns/net`)).toBe(false);
    // Its namespace has its name again (a checkpoint drops it while criu dumps), naming the same namespace.
    const [named, its] = await Promise.all([stat(netnsPath(s.id)), stat(`/proc/${after.pid}/ns/net`)]);
    expect([named.dev, named.ino]).toEqual([its.dev, its.ino]);
    expect(after.lastCheckpoint).toBeNull();
    // The kernel kept its state, and the websocket opened before still works.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
  });
});
