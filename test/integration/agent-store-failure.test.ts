import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UpstreamError } from '../../src/core/errors.js';
import { isAlive } from '../../src/util/proc.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startS3, type TestS3 } from '../helpers/s3-server.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

describe('a checkpoint whose store fails after the session was stopped', () => {
  let s3: TestS3;
  let t: TestAgent;
  beforeAll(async () => {
    s3 = await startS3();
    // A bucket that does not exist: every upload fails after criu has dumped and killed the session.
    t = await startTestAgent({ storeUrl: 's3://no-such-bucket/x', s3Endpoint: s3.endpoint });
  });
  afterAll(async () => {
    await t?.cleanup();
    await s3?.close();
  });

  it('should bring the session back from the local images, state intact, and say why the checkpoint failed', async () => {
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
    expect(await isAlive(s.pid as number)).toBe(false); // criu did stop the original

    const after = await t.client.getSession(s.id);
    expect(after.state).toBe('running');
    expect(after.url).toBe(s.url);
    expect(await isAlive(after.pid as number)).toBe(true);
    expect(after.lastCheckpoint).toBeNull();
    // The kernel kept its state, and the websocket opened before still works.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
  });
});
