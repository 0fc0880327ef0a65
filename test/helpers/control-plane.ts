import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { Lifecycle } from '../../src/core/cluster.js';
import type { PlacedSession } from '../../src/core/control.js';
import { startScheduler, type RunningScheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import { SchedulerClient, type OperationStatus } from '../../src/scheduler/scheduler-client.js';
import { waitFor } from '../../src/util/exec.js';
import { startRedis, startRedisCluster, type TestRedis } from './redis.js';
import { startTestAgent, unusedSubnet, type TestAgent } from './test-agent.js';

const GiB = 2 ** 30;

/** A policies directory with just these files (name to YAML). */
export async function policyDir(files: Record<string, string>): Promise<{ dir: string; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'hubshift-policies-'));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return { dir, close: () => rm(dir, { recursive: true, force: true }) };
}

/** Guards loose enough that tests are not held back by budgets or cooldowns they do not test. */
export const TEST_GUARDS = 'kind: guards\nbudgets: { perNode: 10, total: 50 }\ncooldown: 1s\nquietHours: []\n';
export const TEST_SPOT_EVICTION = 'kind: spot-eviction\nsafetyMargin: 5s\nmoveBytesPerSecond: 200000000\nmoveFixedSeconds: 3\nheadroom: 1.1\n';

export interface NodeSpec {
  name: string;
  lifecycle: Lifecycle;
  pricePerHour: number;
  memoryBytes?: number;
  /** An instance metadata endpoint the agent watches for notices. */
  metadataEndpoint?: string;
  /** Sessions the node registers it sends off at once (none: the workers' default). */
  movesAtOnce?: number;
}

/**
 * Real agents, one per node, on one bridge and subnet with disjoint address
 * pools (test hosts on one machine: a session moved between them keeps its
 * address), sharing the first one's image store, each registered with the scheduler and pushing metrics.
 */
export async function startNodeAgents(scheduler: { url: string; token: string }, nodes: NodeSpec[]): Promise<TestAgent[]> {
  const { tag, subnet } = await unusedSubnet('10.221');
  const bridge = { name: `hsc${tag}`, subnet };
  const agents: TestAgent[] = [];
  try {
    for (const [i, n] of nodes.entries()) {
      agents.push(
        await startTestAgent({
          // One store for all (stop-and-copy goes through it): the first agent's.
          ...(agents[0] ? { storeUrl: agents[0].config.storeUrl } : {}),
          bridge: { ...bridge, pool: { first: 2 + i * 50, last: 51 + i * 50 } },
          scheduler: {
            url: scheduler.url,
            token: scheduler.token,
            pushIntervalMs: 500,
            metadata: n.metadataEndpoint ? { endpoint: n.metadataEndpoint, intervalMs: 200 } : undefined,
            node: { name: n.name, instanceId: `i-${tag}${i.toString().padStart(13, '0')}`, instanceType: `t.${n.name}`, zone: 'local-1a', lifecycle: n.lifecycle, pricePerHour: n.pricePerHour, memoryBytes: n.memoryBytes ?? 8 * GiB, cpus: 2, movesAtOnce: n.movesAtOnce },
          },
        }),
      );
    }
  } catch (err) {
    await Promise.all(agents.map((a) => a.cleanup()));
    throw err;
  }
  return agents;
}

/** Waits until the scheduler lists every node and has heard from it. */
export async function nodesRegistered(c: SchedulerClient, names: string[]): Promise<void> {
  await waitFor(`nodes ${names.join(', ')} to register`, async () => ((await c.nodes().catch(() => [])).filter((n) => names.includes(n.name)).length === names.length ? true : undefined), {
    timeoutMs: 20_000,
    intervalMs: 100,
  });
}

/** Waits until the scheduler shows the session checkpointed with nothing under way on it, and returns it. */
export async function sessionCheckpointed(c: SchedulerClient, id: string, why: string, timeoutMs = 60_000): Promise<PlacedSession> {
  return waitFor(
    why,
    async () => {
      const s = await c.getSession(id);
      return s.state === 'checkpointed' && s.operation === null ? s : undefined;
    },
    { timeoutMs, intervalMs: 250 },
  );
}

/** Waits for an operation to complete or fail, and returns how it ended. */
export async function operationEnd(c: SchedulerClient, opId: string, timeoutMs = 90_000): Promise<OperationStatus> {
  return waitFor(
    `operation ${opId} to end`,
    async () => {
      const st = await c.operation(opId);
      return st.status === 'completed' || st.status === 'failed' ? st : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}

export interface HubshiftProcess {
  child: ChildProcess;
  /** What it printed on stderr so far (its log goes there). */
  output(): string;
  /** The URL it printed when it began listening, if it does. */
  url: string | null;
  /** SIGTERM, then SIGKILL after 5 s; waits for the exit. */
  stop(): Promise<void>;
  kill(): Promise<void>;
}

/** Runs `hubshift ARGS` as its own process and waits for `ready` on its stderr. */
export async function spawnHubshift(args: string[], ready: RegExp, timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<HubshiftProcess> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: env ? { ...process.env, ...env } : undefined });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  };
  try {
    const m = await waitFor(
      `hubshift ${args[0]} to be ready`,
      async () => {
        if (child.exitCode !== null) throw new Error(`hubshift ${args[0]} exited ${child.exitCode}: ${err.slice(-2000)}`);
        return ready.exec(err) ?? undefined;
      },
      { timeoutMs, intervalMs: 50 },
    );
    return { child, output: () => err, url: m[1] ?? null, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
  } catch (e) {
    await end('SIGKILL');
    throw e;
  }
}

const BIN = join(import.meta.dirname, '../../bin/hubshift.js');
const exec = promisify(execFile);

/** Runs `hubshift ARGS` to its end; its exit code and what it printed. */
export async function runHubshift(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export interface TestControlPlane {
  redis: TestRedis;
  scheduler: RunningScheduler;
  agents: TestAgent[];
  client: SchedulerClient;
  token: string;
  policiesDir: string;
  /** Stops the agents (and their sessions), the scheduler and Redis; removes the policies. */
  close(): Promise<void>;
}

/**
 * Redis (or a Redis Cluster), a scheduler in this process with the given
 * policy files, and one real agent per node, registered.
 */
export async function startControlPlane(opts: {
  redis?: 'redis' | 'redis-cluster';
  policies: Record<string, string>;
  nodes: NodeSpec[];
  config?: Partial<SchedulerConfig>;
  /** The scheduler's token (default: a random one). */
  token?: string;
}): Promise<TestControlPlane> {
  const redis = opts.redis === 'redis-cluster' ? await startRedisCluster() : await startRedis();
  const policies = await policyDir(opts.policies);
  const token = opts.token ?? randomBytes(24).toString('hex');
  let scheduler: RunningScheduler | undefined;
  let agents: TestAgent[] = [];
  // Every step runs even when one fails (a failed agent cleanup once left Redis running); the first error is thrown at the end.
  const close = async (): Promise<void> => {
    const steps: Array<() => Promise<void> | undefined> = [...agents.map((a) => () => a.cleanup()), () => scheduler?.close(), () => redis.close(), () => policies.close()];
    const errors: unknown[] = [];
    for (const step of steps) await Promise.resolve(step()).catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw errors[0];
  };
  try {
    scheduler = await startScheduler(
      { host: '127.0.0.1', port: 0, token, redisUrl: redis.url, policiesDir: policies.dir, intervalMs: 60_000, workers: true, worker: { lockMs: 5_000 }, queue: { attempts: 3, backoffMs: 500 }, state: {}, ...opts.config },
      pino({ level: process.env.HUBSHIFT_TEST_LOG ?? 'silent' }),
    );
    const client = new SchedulerClient(scheduler.url, token);
    agents = await startNodeAgents({ url: scheduler.url, token }, opts.nodes);
    await nodesRegistered(client, opts.nodes.map((n) => n.name));
    return { redis, scheduler, agents, client, token, policiesDir: policies.dir, close };
  } catch (err) {
    await close();
    throw err;
  }
}
