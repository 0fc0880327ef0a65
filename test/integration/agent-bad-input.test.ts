import { readdir, readFile, truncate, unlink, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { UpstreamError } from '../../src/core/errors.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { DEFAULT_CONNTRACK_BUCKETS } from '../../src/criu/conntrack-table.js';
import { netnsPath } from '../../src/agent/network.js';
import { waitFor } from '../../src/util/exec.js';
import { childrenOf, isAlive, killQuietly } from '../../src/util/proc.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';
import { killLeavingExiting, traceWithoutReaping } from '../helpers/unreaped.js';

/**
 * A CRIU action script that, when the flag file says so, breaks the dump at
 * post-dump (tasks frozen, network locked): "kill" SIGKILLs criu itself,
 * "fail" makes the script fail so criu aborts; or, "capture", puts a
 * directory where the agent's page capture writes the first page image.
 */
const FAULT_SCRIPT = (flag: string): string => `#!/bin/sh
mode=$(cat '${flag}' 2>/dev/null)
if [ "$CRTOOLS_SCRIPT_ACTION" = "pre-dump" ] && [ "$mode" = capture ]; then
  mkdir "$CRTOOLS_IMAGE_DIR/pages-1.img.data"
  exit 0
fi
[ "$CRTOOLS_SCRIPT_ACTION" = "post-dump" ] || exit 0
[ "$mode" = fail ] && exit 1
[ "$mode" = kill ] || exit 0
p=$$
while [ "$p" -gt 1 ]; do
  p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)
  if tr '\\0' ' ' < /proc/$p/cmdline | grep -q 'criu dump'; then kill -9 "$p"; exit 0; fi
done
exit 0
`;

async function errorOf(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof UpstreamError) return err;
    throw err;
  }
  throw new Error('expected the call to fail');
}

/** criu processes working for the agent whose data lives in `dataDir` (other test files run criu meanwhile). */
async function strayCriu(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (/\/criu\0(dump|restore|lazy-pages)\0/.test(cmd) && cmd.includes(dataDir)) out.push(`${p}: ${cmd.replaceAll('\0', ' ')}`);
  }
  return out;
}

describe('the agent refuses bad input clearly and loses nothing', () => {
  let t: TestAgent;
  let flag: string;
  beforeAll(async () => {
    const probe = await startTestAgent();
    flag = join(probe.config.dataDir, '..', `fault-${Date.now()}`);
    const script = `${flag}.sh`;
    await writeFile(script, FAULT_SCRIPT(flag));
    await chmod(script, 0o755);
    await probe.cleanup();
    t = await startTestAgent({ criuActionScript: script });
  });
  afterAll(async () => {
    await t?.cleanup();
    await unlink(flag).catch(() => undefined);
    await unlink(`${flag}.sh`).catch(() => undefined);
  });

  it("should have shrunk the host's connection-tracking table at start, unless it tracks many connections", async () => {
    // Every criu dump walks the whole table twice (criu/conntrack-table.ts); an agent started here shrinks it.
    const read = async (name: string): Promise<number> => Number((await readFile(`/proc/sys/net/netfilter/${name}`, 'utf8')).trim());
    const [buckets, count] = [await read('nf_conntrack_buckets'), await read('nf_conntrack_count')];
    expect(buckets <= DEFAULT_CONNTRACK_BUCKETS || count > DEFAULT_CONNTRACK_BUCKETS / 2).toBe(true);
  });

  it('should answer 401 to a wrong or missing token, and /healthz without one', async () => {
    const wrong = await fetch(`${t.agent.url}/v1/sessions`, { headers: { Authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: { code: 'unauthorized', message: expect.stringContaining('token') } });
    expect((await fetch(`${t.agent.url}/v1/sessions`)).status).toBe(401);
    expect((await fetch(`${t.agent.url}/healthz`)).status).toBe(200);
  });

  it('should name the field of a bad request and the id that is unknown', async () => {
    const bad = await errorOf(t.client.startSession('Not A User!'));
    expect(bad.status).toBe(400);
    expect(bad.message).toMatch(/user/);
    const res = await fetch(`${t.agent.url}/v1/sessions`, { method: 'POST', headers: { Authorization: `Bearer ${t.token}`, 'Content-Type': 'application/json' }, body: '{oops' });
    expect(res.status).toBe(400);
    expect((await errorOf(t.client.getSession('s00000000'))).status).toBe(404);
    expect((await errorOf(t.client.getSession('../../etc'))).status).toBe(400);
    const unknown = await errorOf(t.client.restore('c0000000000000'));
    expect(unknown.status).toBe(404);
    expect(unknown.message).toContain('no checkpoint c0000000000000');
    expect((await errorOf(t.client.checkpoint('s00000000'))).status).toBe(404);
  });

  it('should refuse a damaged or uncommitted checkpoint before criu runs, keeping the session restorable', async () => {
    const s = await t.client.startSession('bob');
    const k = await kernelWithState(s.url, s.token, 8);
    k.channel.close();
    const a = await t.client.checkpoint(s.id, true); // left running
    expect((await t.client.getSession(s.id)).state).toBe('running');

    // A restore of a session that is already running.
    const running = await errorOf(t.client.restore(a.checkpoint));
    expect(running.status).toBe(409);
    expect(running.message).toContain('already running');

    const c = await t.client.checkpoint(s.id, true);
    const b = await t.client.checkpoint(s.id);
    expect((await t.client.getSession(s.id)).state).toBe('checkpointed');

    // a: a truncated page blob.
    const store = t.config.storeUrl;
    const pages = (await readdir(join(store, a.checkpoint, 'blobs'))).filter((n) => n.startsWith('pages-'));
    await truncate(join(store, a.checkpoint, 'blobs', pages.at(-1)!), 4096);
    const truncated = await errorOf(t.client.restore(a.checkpoint));
    expect(truncated.status).toBe(422);
    expect(truncated.message).toMatch(/truncated or altered/);
    expect((await t.client.getSession(s.id)).state).toBe('checkpointed');
    // The lazy-pages daemon started while the pages were verified is gone too.
    expect(await strayCriu(t.config.dataDir)).toEqual([]);

    // c: the manifest missing, as after an interrupted checkpoint.
    await unlink(join(store, c.checkpoint, 'manifest.json'));
    const uncommitted = await errorOf(t.client.restore(c.checkpoint));
    expect(uncommitted.status).toBe(422);
    expect(uncommitted.message).toContain('never committed');
    expect((await t.client.getSession(s.id)).state).toBe('checkpointed');

    // b is whole: the session comes back with its state.
    const restored = await t.client.restore(b.checkpoint);
    expect(restored.state).toBe('running');
    const again = await KernelChannel.connect(restored.url, restored.token, k.kernelId);
    expect((await askState(again)).answer).toBe('42');
    again.close();
    await t.client.removeSession(s.id);
  });

  it.each(['kill', 'fail'])('should keep the session running with no lock rules left when criu is broken mid-dump (%s)', async (mode) => {
    const s = await t.client.startSession('carol');
    const k = await kernelWithState(s.url, s.token, 8);
    await writeFile(flag, mode);
    try {
      const err = await errorOf(t.client.checkpoint(s.id));
      expect(err.status).toBe(500);
      expect(err.upstreamCode).toBe('criu_failed');
      // criu logs at -v2 here (the agent's default): still enough to say what broke.
      expect(err.message).toMatch(
        mode === 'kill' ? /^criu dump failed: criu was killed by SIGKILL \(the last its log says: .+; log: .+dump\.log\)/ : /^criu dump failed: the action script .+\.sh failed, and criu gave up .+ \(log: .+dump\.log\)/,
      );
      // ... and no more: criu stamps its lines with the time only from -v3 up.
      const log = await readFile(/log: (\S+dump\.log)\)/.exec(err.message)![1]!, 'utf8');
      expect(log).toMatch(/^Error \(/m);
      expect(log).not.toMatch(/^\(\d/m);
    } finally {
      await unlink(flag);
    }
    const after = await t.client.getSession(s.id);
    expect(after.state).toBe('running');
    expect(after.pid).toBe(s.pid);
    expect(await isAlive(s.pid as number)).toBe(true);
    expect(await hasLockRules(netnsPath(s.id))).toBe(false);
    expect(await strayCriu(t.config.dataDir)).toEqual([]);
    // The session answers, and its kernel kept its state, on the same websocket.
    expect((await askState(k.channel)).answer).toBe('42');
    k.channel.close();
    // And a later checkpoint works.
    const ok = await t.client.checkpoint(s.id, true);
    expect(ok.bytes).toBeGreaterThan(8 * 2 ** 20);
    await t.client.removeSession(s.id);
  });

  it('should keep the session running when its memory cannot be written, and say so', async () => {
    const s = await t.client.startSession('dave');
    const k = await kernelWithState(s.url, s.token, 8);
    await writeFile(flag, 'capture');
    try {
      const err = await errorOf(t.client.checkpoint(s.id));
      expect(err.upstreamCode).toBe('store_failed');
      expect(err.message).toMatch(/failed writing its memory under .+: pages-1\.img: .*Is a directory.*; the session was resumed/);
    } finally {
      await unlink(flag);
    }
    const after = await t.client.getSession(s.id);
    expect(after.state).toBe('running');
    expect(after.pid).toBe(s.pid);
    expect(await hasLockRules(netnsPath(s.id))).toBe(false);
    expect(await strayCriu(t.config.dataDir)).toEqual([]);
    expect((await askState(k.channel)).answer).toBe('42');
    k.channel.close();
    await t.client.removeSession(s.id);
  });

  it('should refuse at once to checkpoint a session whose processes are exiting, and say so', async () => {
    const s = await t.client.startSession('erin');
    const k = await kernelWithState(s.url, s.token, 8);
    k.channel.close();
    const init = s.pid as number;
    // The server (the namespace's init) killed while its kernel cannot die yet: the init is exiting, still in state S.
    const kernel = (await childrenOf(init))[0]!;
    const tracer = await traceWithoutReaping(kernel);
    try {
      await killLeavingExiting(init);
      const t0 = performance.now();
      const err = await errorOf(t.client.checkpoint(s.id));
      // Not criu's seize timeout (10 s) with the session frozen, ending in "Unseizable non-zombie".
      expect(performance.now() - t0).toBeLessThan(2_000);
      expect(err.status).toBe(409);
      expect(err.message).toMatch(/not answering \(its processes are gone or exiting\); only a running session can be dumped/);
      expect(await strayCriu(t.config.dataDir)).toEqual([]);
    } finally {
      killQuietly(tracer.pid!);
    }
    await waitFor('the init to end', async () => ((await isAlive(init)) ? undefined : true), { timeoutMs: 10_000, intervalMs: 20 });
    await t.client.removeSession(s.id);
  });
});
