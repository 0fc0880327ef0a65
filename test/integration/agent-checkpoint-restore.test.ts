import { appendFile, readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { netnsName, netnsPath } from '../../src/agent/network.js';
import { sessionPaths } from '../../src/agent/sandbox.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { run, sleep, waitFor } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import { bigFile, queuedRequest } from '../helpers/busy-server.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startS3, type TestS3 } from '../helpers/s3-server.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

let s3: TestS3 | undefined;

const stores = [
  { name: 'directory store', config: async () => ({}) },
  { name: 'directory store, restoring plainly (--no-lazy-restore)', config: async () => ({ lazyRestore: false }) },
  {
    name: 'S3 store',
    config: async () => {
      s3 = await startS3();
      return { storeUrl: `s3://${s3.bucket}/checkpoints`, s3Endpoint: s3.endpoint };
    },
  },
];

describe.each(stores)('a Jupyter session checkpointed and restored through the $name', (store) => {
  let t: TestAgent;
  beforeAll(async () => {
    t = await startTestAgent(await store.config());
  });
  afterAll(async () => {
    await t?.cleanup();
    await s3?.close();
    s3 = undefined;
  });

  it('should bring back the same kernel with its variables and its 256 MB of bytes', async () => {
    const started = await t.client.startSession('alice');
    expect(started.state).toBe('running');
    const k = await kernelWithState(started.url, started.token, 256);
    const pid = started.pid as number;
    expect(await isAlive(pid)).toBe(true);

    // Progress is visible while the checkpoint runs, and gone after.
    const seen: Array<{ step: string; doneBytes: number | null }> = [];
    let finished = false;
    const pending = t.client.checkpoint(started.id).finally(() => (finished = true));
    while (!finished) {
      const op = await t.client.progress(started.id);
      if (op) seen.push({ step: op.step, doneBytes: op.doneBytes });
      await new Promise((r) => setTimeout(r, 20));
    }
    const ckpt = await pending;
    // The next checkpoint's capture helper is started as this one answers, not half a second later (back-to-back
    // checkpoints, as in an evacuation, would wait for its start).
    await waitFor('a capture helper waiting for the next checkpoint', async () => (t.agent.ctx.captureHelpers.waitingPid !== undefined ? true : undefined), { timeoutMs: 250, intervalMs: 5 });
    expect(seen.map((x) => x.step)).toContain('dumping');
    expect(Math.max(...seen.map((x) => x.doneBytes ?? 0))).toBeGreaterThan(0);
    expect(await t.client.progress(started.id)).toBeNull();
    expect(ckpt.checkpoint).toMatch(/^c[0-9a-z]+$/);
    expect(ckpt.bytes).toBeGreaterThan(256 * 2 ** 20);
    expect(ckpt.seconds).toBeGreaterThan(0);

    // The processes are gone (killed as the checkpoint answered: their memory may take a moment to free) and the url does not answer.
    await waitFor('the checkpointed processes to be gone', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    expect(await k.rest.answers(1_000)).toBe(false);
    expect((await t.client.getSession(started.id)).state).toBe('checkpointed');
    expect(await t.client.listCheckpoints()).toContain(ckpt.checkpoint);

    // The server's log as it was at the dump went with the checkpoint (criu refuses a restore whose open files changed
    // size): one grown since is kept aside and the saved one put back.
    const log = sessionPaths(t.config.dataDir, started).log;
    await appendFile(log, 'written after the dump\n');
    // A directory store's restore verifies its large page images where they lie, with the native piece hasher that
    // setup builds (native-hashing.test.ts): no Python hashing helper is kept waiting for it. S3's are hashed as they
    // stream in.
    expect(t.agent.ctx.hashingHelpers.waitingPids).toEqual([]);
    const restored = await t.client.restore(ckpt.checkpoint);
    expect(await readFile(`${log}.before-restore`, 'utf8')).toContain('written after the dump');
    expect(await readFile(log, 'utf8')).not.toContain('written after the dump');
    expect({ id: restored.id, url: restored.url, token: restored.token }).toEqual({ id: started.id, url: started.url, token: started.token });
    expect(restored.state).toBe('running');

    // The same kernel id, reached over a new websocket, answers with its state.
    expect((await k.rest.kernels()).map((x) => x.id)).toContain(k.kernelId);
    const fresh = await KernelChannel.connect(restored.url, restored.token, k.kernelId);
    expect(await askState(fresh)).toEqual({ answer: '42', hash: k.hash });
    fresh.close();

    // The websocket opened before the checkpoint was restored with its connection.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();

    // criu's network lock is gone from the restored namespace.
    expect(await hasLockRules(`/proc/${restored.pid}/ns/net`)).toBe(false);

    // The namespace was left out of the images and made again: the restored processes are in the one the session's
    // name pins, with its MAC and address, its bridge end up.
    expect((await t.agent.ctx.store.getManifest(ckpt.checkpoint)).netnsOutside).toBe(true);
    const inNs = await stat(`/proc/${restored.pid}/ns/net`);
    const named = await stat(netnsPath(started.id));
    expect([named.dev, named.ino]).toEqual([inNs.dev, inNs.ino]);
    const net = t.agent.ctx.registry.get(started.id).network;
    expect((await run('ip', ['-n', netnsName(started.id), '-br', 'link', 'show', 'eth0'])).stdout).toContain(net.mac);
    expect((await run('ip', ['-n', netnsName(started.id), '-br', 'addr', 'show', 'eth0'])).stdout).toContain(`${net.ip}/`);
    expect((await run('ip', ['-br', 'link', 'show', net.hostVeth])).stdout).toMatch(/\bUP\b/);

    // Metrics read the restored session: its memory holds the bytes, the kernel is idle.
    const m = await t.agent.ctx.registry.get(started.id);
    expect(m.state).toBe('running');
    // The server learns a kernel's state on its own channel, a moment apart from
    // the client's websocket: read metrics until they show the state, bounded.
    const metricsWhen = (busy: boolean) =>
      waitFor(`the kernel to report ${busy ? 'busy' : 'idle'}`, async () => {
        const x = await t.client.metrics(started.id);
        return (x.kernels as Array<{ busy: boolean }>).some((kk) => kk.busy === busy) ? x : undefined;
      }, { timeoutMs: 4_000, intervalMs: 100 });
    const metrics = await metricsWhen(false);
    expect(metrics.rssBytes as number).toBeGreaterThan(256 * 2 ** 20);
    expect(metrics.processes as number).toBeGreaterThanOrEqual(2);
    expect(metrics.kernels).toEqual([expect.objectContaining({ id: k.kernelId, busy: false })]);
    // A running cell shows as busy, with the client's connection counted.
    const watcher = await KernelChannel.connect(restored.url, restored.token, k.kernelId);
    const running = watcher.execute('import time; time.sleep(5)', 30_000);
    const busy = await metricsWhen(true);
    expect(busy.kernels).toEqual([expect.objectContaining({ id: k.kernelId, busy: true, executionState: 'busy' })]);
    expect(busy.connections as number).toBeGreaterThanOrEqual(1);
    await running;
    watcher.close();
    await t.client.removeSession(started.id);
    expect(await isAlive(restored.pid as number)).toBe(false);
  });
});

describe('checkpointing a busy server', () => {
  let t: TestAgent;
  beforeAll(async () => {
    t = await startTestAgent();
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it('should answer, once restored, the request the server was working on, and reset at once the one it had not taken', async () => {
    const s = await t.client.startSession('busy');
    const big = await bigFile(s.url, s.token, 128);
    // The server reads and encodes 128 MiB on its one thread: the checkpoint freezes it in that request, a second
    // one waiting in its listen queue, which criu leaves out (--skip-in-flight).
    const busy = await big.read();
    const queued = queuedRequest(s.url, s.token).then((outcome) => ({ outcome, at: Date.now() }));
    await sleep(50);
    const ck = await t.client.checkpoint(s.id);
    const answeredAt = Date.now();
    // Reset while the session was frozen (resetLeftOutRequests), before the checkpoint answered: its client may send it
    // again. Unreset, it would learn nothing until its first TCP keepalive, a minute on (the fetch gives up after 30 s),
    // and the session would be asleep for good in between.
    const { outcome, at } = await queued;
    expect(outcome).toBe('ECONNRESET');
    // The slack is this process's own: the reset and the answer come over two connections.
    expect(at - answeredAt).toBeLessThan(250);
    // The request the server had taken went with the checkpoint, and is answered whole once it runs again.
    await t.client.restore(ck.checkpoint);
    await busy.answered();
    const ch = await KernelChannel.connect(s.url, s.token, big.kernel.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: big.kernel.hash });
    ch.close();
    await t.client.removeSession(s.id);
  });
});
