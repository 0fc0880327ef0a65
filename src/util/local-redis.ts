import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, waitFor } from './exec.js';

// A real Redis on loopback for the demo and the tests: its own data directory, append-only, stopped by its pid.

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

export interface RedisServer {
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

export async function startMember(dir: string, extra: string[], port: number): Promise<RedisServer> {
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

export interface LocalRedis {
  /** The URL hubshift takes: redis://… or redis-cluster://… */
  url: string;
  servers: RedisServer[];
  close(): Promise<void>;
}

/** A real Redis on a free loopback port, with an append-only file so a restart loses nothing. */
export async function startRedis(): Promise<LocalRedis> {
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

