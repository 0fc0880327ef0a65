import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { parseSubnet } from '../../src/agent/network.js';
import { GATEWAY_DEFAULTS } from '../../src/hub/gateway-config.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { operationEnd, startControlPlane, TEST_GUARDS } from '../helpers/control-plane.js';
import { HubUser, spawnThroughHub, startHub, type TestHub } from '../helpers/hub.js';
import { freePort } from '../helpers/redis.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { stopOnInterrupt } from './interrupt.js';

export interface WakeFigures {
  sizeMiB: number;
  /** A checkpointed session: first request for the notebook page to the page loaded (through the "resuming" page, as a browser). */
  wakeToPageSeconds: number;
  /** The same wake to the first execute answered by the old kernel. */
  wakeToExecuteSeconds: number;
  /** Baseline of the same run: a new server spawned through the hub until its notebook page loads. */
  coldStartSeconds: number;
}

/** How often the bench asks, like the resuming page's script does (which asks every 250 ms). */
const POLL_MS = 50;

async function notebookPage(url: string, token: string): Promise<boolean> {
  const r = await fetch(`${url}tree?token=${token}`, { headers: { Accept: 'text/html' } });
  const text = await r.text();
  return r.status === 200 && !text.includes('Resuming your session') && text.includes('notebook_list');
}

async function coldStart(hub: TestHub, user: string): Promise<number> {
  await hub.api('POST', `/users/${user}`, z.unknown());
  const t = await hub.api('POST', `/users/${user}/tokens`, z.object({ token: z.string() }), { note: 'bench', expires_in: 3600 });
  const t0 = performance.now();
  await hub.api('POST', `/users/${user}/server`, z.unknown());
  await waitFor('the new server', async () => ((await hub.api('GET', `/users/${user}`, HubUser)).servers['']?.ready ? true : undefined), { timeoutMs: 120_000, intervalMs: POLL_MS });
  await waitFor('its notebook page', async () => ((await notebookPage(`${hub.url}/user/${user}/`, t.token)) ? true : undefined), { timeoutMs: 60_000, intervalMs: POLL_MS });
  return (performance.now() - t0) / 1000;
}

/**
 * npm run bench -- wake: sessions of each size spawned through a real hub,
 * checkpointed, then woken by a request for their notebook page through the
 * hub's proxy and the gateway; against a cold start of a new server in the same run.
 */
export async function benchWake(sizes: number[], log: (m: string) => void): Promise<WakeFigures[]> {
  const tmp = await mkdtemp(join(tmpdir(), 'hubshift-bench-wake-'));
  const token = randomBytes(24).toString('hex');
  // The hub's port first: the gateway asks the hub whose the waking request's token is, as in production.
  const hubPort = await freePort();
  const cp = await startControlPlane({
    token,
    policies: { 'guards.yaml': TEST_GUARDS },
    nodes: [{ name: 'node-a', lifecycle: 'on-demand', pricePerHour: 0.1, memoryBytes: 16 * 2 ** 30 }],
    config: { intervalMs: 60_000, gateway: { config: { ...GATEWAY_DEFAULTS, port: 0, pollIntervalMs: 20 }, hub: { apiUrl: `http://127.0.0.1:${hubPort}/hub/api`, token, intervalMs: 60_000 } } },
  });
  let hub: TestHub | undefined;
  const figures: WakeFigures[] = [];
  const stop = stopOnInterrupt(async () => {
    await hub?.close();
    await cp.close();
    await rm(tmp, { recursive: true, force: true });
  });
  try {
    const tokenFile = join(tmp, 'token');
    await writeFile(tokenFile, token, { mode: 0o600 });
    hub = await startHub({ hubIp: parseSubnet(cp.agents[0]!.config.bridge.subnet).gateway, schedulerUrl: cp.scheduler.url, tokenFile, port: hubPort });
    for (const [i, size] of sizes.entries()) {
      log(`wake: ${size} MiB: cold start of a new server (baseline)`);
      const coldStartSeconds = await coldStart(hub, `cold${i}`);
      log(`wake: ${size} MiB: a session holding it, checkpointed`);
      const user = `wake${i}`;
      const { token: userToken, base } = await spawnThroughHub(hub, user);
      const k = await kernelWithState(base, userToken, size);
      k.channel.close();
      const [s] = (await cp.client.listSessions()).filter((x) => x.user === user);
      const op = await cp.client.checkpoint(s!.id);
      const end = await operationEnd(cp.client, op.id, 600_000);
      if (end.status !== 'completed') throw new Error(`checkpoint of ${s!.id} failed: ${end.steps.map((x) => x.failedReason).join('; ')}`);
      await sleep(1_000);

      log(`wake: ${size} MiB: first request for the notebook page`);
      const t0 = performance.now();
      const first = await fetch(`${base}tree?token=${userToken}`, { headers: { Accept: 'text/html' } });
      if (!(await first.text()).includes('Resuming your session')) throw new Error('the first request did not get the resuming page: was the session not checkpointed?');
      // As the resuming page does: follow the status, then load the page.
      await waitFor('the session to be ready', async () => {
        const st = z.object({ ready: z.boolean() }).passthrough().parse(await (await fetch(`${base}.hubshift/status`)).json());
        return st.ready ? true : undefined;
      }, { timeoutMs: 300_000, intervalMs: POLL_MS });
      if (!(await notebookPage(base, userToken))) throw new Error('the notebook page did not load after the wake');
      const wakeToPageSeconds = (performance.now() - t0) / 1000;
      const ch = await KernelChannel.connect(base, userToken, k.kernelId, 60_000);
      // The first execute is a small one, as a user's next cell usually is; the check after it hashes every byte
      // the kernel holds, which waits for all of its memory to have come back (it timed that too before 2026-12-02).
      const answer = await ch.execute('x + 1');
      const wakeToExecuteSeconds = (performance.now() - t0) / 1000;
      if (answer.result !== '42') throw new Error(`the woken kernel answered ${JSON.stringify(answer)}`);
      const state = await askState(ch);
      ch.close();
      if (state.hash !== k.hash) throw new Error(`the woken kernel lost its state (${state.hash} != ${k.hash})`);
      figures.push({ sizeMiB: size, wakeToPageSeconds, wakeToExecuteSeconds, coldStartSeconds });
      await hub.api('DELETE', `/users/${user}/server`, z.unknown()).catch(() => undefined);
      await hub.api('DELETE', `/users/cold${i}/server`, z.unknown()).catch(() => undefined);
    }
  } finally {
    await stop();
  }
  return figures;
}
