import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, sleep, waitFor } from '../../src/util/exec.js';
import { freePort, startMember, startRedis, type LocalRedis, type RedisServer } from '../../src/util/local-redis.js';

export { freePort, startRedis };
export type TestRedis = LocalRedis;
export type TestRedisServer = RedisServer;

/** A three-master Redis Cluster on loopback, joined with redis-cli --cluster create. */
export async function startRedisCluster(): Promise<TestRedis> {
  const servers: RedisServer[] = [];
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
