import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, sleep, waitFor } from '../../src/util/exec.js';

/** A free loopback port (and, for cluster members, its bus port +10000 too). */
export async function freePort(range?: { min: number; max: number }): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const want = range ? range.min + Math.floor(Math.random() * (range.max - range.min)) : 0;
    const got = await new Promise<number | null>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(null));
      s.listen(want, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    if (got !== null) return got;
  }
  throw new Error('no free port found');
}

export interface TestRedisServer {
  port: number;
  pid: number;
  /** Stops it (SIGTERM, then SIGKILL) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory (an AOF keeps every write). */
  restart(): Promise<void>;
}

function startServer(port: number, dir: string, extra: string[]): ChildProcess {
  return spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no', ...extra], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

async function ping(port: number): Promise<boolean> {
  const r = await run('redis-cli', ['-p', String(port), 'ping'], { allowFailure: true, timeoutMs: 2_000 });
  return r.code === 0 && r.stdout.trim() === 'PONG';
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(t);
}

async function startMember(dir: string, extra: string[], port: number): Promise<TestRedisServer> {
  let child = startServer(port, dir, extra);
  await waitFor(`redis-server on port ${port}`, async () => ((await ping(port)) ? true : undefined), { timeoutMs: 10_000 });
  return {
    port,
    get pid() {
      return child.pid ?? -1;
    },
    stop: () => stopChild(child),
    async restart() {
      await stopChild(child);
      child = startServer(port, dir, extra);
      await waitFor(`redis-server on port ${port} after restart`, async () => ((await ping(port)) ? true : undefined), { timeoutMs: 10_000 });
    },
  };
}

export interface TestRedis {
  /** The URL hubshift takes: redis://… or redis-cluster://… */
  url: string;
  servers: TestRedisServer[];
  close(): Promise<void>;
}

/** A real Redis on a free loopback port, with an append-only file so a restart loses nothing. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'hubshift-redis-'));
  const server = await startMember(dir, [], await freePort());
  return {
    url: `redis://127.0.0.1:${server.port}`,
    servers: [server],
    async close() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A three-master Redis Cluster on loopback, joined with redis-cli --cluster create. */
export async function startRedisCluster(): Promise<TestRedis> {
  const servers: TestRedisServer[] = [];
  const dirs: string[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  };
  try {
    for (let i = 0; i < 3; i++) {
      const dir = await mkdtemp(join(tmpdir(), `hubshift-redis-c${i}-`));
      dirs.push(dir);
      // The cluster bus listens on port + 10000: keep both in range and free.
      let port = await freePort({ min: 20_000, max: 50_000 });
      while ((await freePort({ min: port + 10_000, max: port + 10_001 }).catch(() => -1)) !== port + 10_000) port = await freePort({ min: 20_000, max: 50_000 });
      servers.push(await startMember(dir, ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '3000'], port));
    }
    await run('redis-cli', ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeoutMs: 30_000 });
    await waitFor(
      'the Redis Cluster to report cluster_state:ok',
      async () => {
        for (const s of servers) {
          const r = await run('redis-cli', ['-p', String(s.port), 'cluster', 'info'], { allowFailure: true, timeoutMs: 2_000 });
          if (!/cluster_state:ok/.test(r.stdout)) return undefined;
        }
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
    await sleep(200);
  } catch (err) {
    await close();
    throw err;
  }
  return { url: `redis-cluster://${servers.map((s) => `127.0.0.1:${s.port}`).join(',')}`, servers, close };
}
