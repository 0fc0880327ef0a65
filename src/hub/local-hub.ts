import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { waitFor } from '../util/exec.js';
import { isAlive, killQuietly } from '../util/proc.js';
import { freePort } from '../util/local-redis.js';

const ROOT = join(import.meta.dirname, '../..');
const CHP = join(ROOT, 'node_modules/.bin/configurable-http-proxy');

export interface TestHub {
  /** The hub's public address (its proxy): http://127.0.0.1:PORT */
  url: string;
  /** The hub's API through the proxy. */
  apiUrl: string;
  /** An admin token (a service of the test's own). */
  adminToken: string;
  /** The proxy's REST API and its token, to read the routes the hub keeps. */
  proxyApi: { url: string; token: string };
  /** The hub's log so far. */
  output(): string;
  /** Calls the hub's API as the test's admin service. */
  api<T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown): Promise<T>;
  /** Stops the hub (which stops its servers and its proxy), then anything of it still alive, by pid. */
  close(): Promise<void>;
}

/**
 * JupyterHub 3.0 from Debian with configurable-http-proxy from npm, the
 * DummyAuthenticator and `last_activity_interval` 15 s, loading hubshift's
 * jupyterhub_config.py as an operator would. The hub's API listens on
 * `hubIp` (an address of the agents' bridge) so that sessions reach it.
 */
export async function startHub(opts: {
  hubIp: string;
  schedulerUrl: string;
  tokenFile: string;
  lastActivityInterval?: number;
  port?: number;
  /** More of hubshift's settings for the hub (HUBSHIFT_CHECKPOINT_ON_STOP). */
  env?: Record<string, string>;
  /** Whether the hub stops every server when it stops (default true, JupyterHub's default). */
  cleanupServers?: boolean;
  /** Whether users may have named servers besides their default one (JupyterHub's allow_named_servers; default false). */
  namedServers?: boolean;
  /** Told how to stop the hub as soon as it is spawned, before it answers (so an interrupted start leaves nothing). */
  onSpawned?: (close: () => Promise<void>) => void;
}): Promise<TestHub> {
  const dir = await mkdtemp(join(tmpdir(), 'hubshift-hub-'));
  const [port, hubPort, proxyApiPort] = [opts.port ?? (await freePort()), await freePort(), await freePort()];
  const adminToken = randomBytes(24).toString('hex');
  const proxyToken = randomBytes(24).toString('hex');
  const config = `
import os
c = get_config()
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.ip = '127.0.0.1'
c.JupyterHub.port = ${port}
c.JupyterHub.hub_ip = '${opts.hubIp}'
c.JupyterHub.hub_port = ${hubPort}
c.JupyterHub.hub_connect_ip = '${opts.hubIp}'
c.JupyterHub.last_activity_interval = ${opts.lastActivityInterval ?? 15}
c.JupyterHub.cleanup_servers = ${opts.cleanupServers === false ? 'False' : 'True'}
c.JupyterHub.allow_named_servers = ${opts.namedServers === true ? 'True' : 'False'}
c.JupyterHub.db_url = 'sqlite:///${dir}/jupyterhub.sqlite'
c.JupyterHub.cookie_secret_file = '${dir}/cookie_secret'
c.JupyterHub.pid_file = '${dir}/jupyterhub.pid'
c.ConfigurableHTTPProxy.command = ['${CHP}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${proxyApiPort}'
c.ConfigurableHTTPProxy.auth_token = '${proxyToken}'
c.ConfigurableHTTPProxy.pid_file = '${dir}/proxy.pid'
c.JupyterHub.services = [{'name': 'hubshift-test', 'api_token': '${adminToken}'}]
c.JupyterHub.load_roles = [{'name': 'hubshift-test', 'scopes': ['admin:users', 'admin:servers', 'tokens', 'read:users', 'access:servers', 'read:users:activity'], 'services': ['hubshift-test']}]
load_subconfig('${join(ROOT, 'infra/jupyterhub/jupyterhub_config.py')}')
`;
  await writeFile(join(dir, 'jupyterhub_config.py'), config);
  const child = spawn('/usr/bin/jupyterhub', ['-f', join(dir, 'jupyterhub_config.py')], {
    cwd: dir,
    env: { ...process.env, HUBSHIFT_URL: opts.schedulerUrl, HUBSHIFT_TOKEN_FILE: opts.tokenFile, PATH: `/usr/sbin:/usr/bin:/sbin:/bin`, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const apiUrl = `${url}/hub/api`;

  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
    // The proxy outlives a hub that was killed: stopped by the pid it wrote.
    const proxyPid = Number((await readFile(join(dir, 'proxy.pid'), 'utf8').catch(() => '')).trim());
    if (proxyPid > 0 && (await isAlive(proxyPid))) killQuietly(proxyPid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  };

  opts.onSpawned?.(close);

  const api = async <T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown): Promise<T> => {
    const res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { Authorization: `token ${adminToken}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`hub ${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return schema.parse(text ? JSON.parse(text) : null);
  };

  try {
    await waitFor(
      'JupyterHub to answer through its proxy',
      async () => {
        if (child.exitCode !== null) throw new Error(`jupyterhub exited ${child.exitCode}: ${out.slice(-3000)}`);
        const r = await fetch(`${apiUrl}/`, { signal: AbortSignal.timeout(2_000) }).catch(() => null);
        return r?.ok ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
  } catch (err) {
    await close();
    throw err;
  }
  return { url, apiUrl, adminToken, proxyApi: { url: `http://127.0.0.1:${proxyApiPort}`, token: proxyToken }, output: () => out, api, close };
}

export const HubUser = z.object({
  name: z.string(),
  last_activity: z.string().nullable(),
  servers: z.record(z.string(), z.object({ ready: z.boolean(), pending: z.string().nullable(), url: z.string(), last_activity: z.string().nullable() }).passthrough()).default({}),
}).passthrough();

/**
 * Creates a user, spawns its default server (or the named one, where the hub
 * allows them) through the hub, waits until it is ready; returns a token of
 * the user's and the server's base URL on the hub.
 */
export async function spawnThroughHub(hub: TestHub, user: string, server = ''): Promise<{ token: string; base: string }> {
  await hub.api('POST', `/users/${user}`, z.unknown()).catch((err: Error) => {
    if (!/409/.test(err.message)) throw err;
  });
  await hub.api('POST', server ? `/users/${user}/servers/${server}` : `/users/${user}/server`, z.unknown());
  await waitFor(
    `${user}'s server ${JSON.stringify(server)} to be ready`,
    async () => ((await hub.api('GET', `/users/${user}`, HubUser)).servers[server]?.ready ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 250 },
  );
  const t = await hub.api('POST', `/users/${user}/tokens`, z.object({ token: z.string() }), { note: 'hubshift test', expires_in: 3600 });
  return { token: t.token, base: `${hub.url}/user/${user}/${server ? `${server}/` : ''}` };
}

/** The proxy's route table: path prefix to target. */
export async function proxyRoutes(hub: TestHub): Promise<Record<string, string>> {
  const res = await fetch(`${hub.proxyApi.url}/api/routes`, { headers: { Authorization: `token ${hub.proxyApi.token}` } });
  const routes = z.record(z.string(), z.object({ target: z.string() }).passthrough()).parse(await res.json());
  return Object.fromEntries(Object.entries(routes).map(([k, v]) => [k, v.target]));
}
