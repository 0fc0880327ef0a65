import { Cluster, Redis } from 'ioredis';
import { InputError } from '../core/errors.js';

export type RedisConnection = Redis | Cluster;

function hostPort(s: string, url: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(s.trim());
  if (!m) throw new InputError(`--redis ${url}: "${s}" is not host:port`);
  return { host: m[1]!, port: Number(m[2]) };
}

/**
 * Opens Redis from a URL: redis://host:port[/db] for one server (or a
 * managed primary), redis-cluster://host:port,host:port,... for a Redis
 * Cluster (any reachable members; the rest are discovered). Commands wait
 * through a restart of Redis rather than fail (BullMQ's workers need that),
 * and are pipelined automatically, per node on a cluster.
 */
export function connectRedis(url: string, name = 'hubshift'): RedisConnection {
  if (url.startsWith('redis-cluster://')) {
    const nodes = url.slice('redis-cluster://'.length).replace(/\/.*$/, '').split(',').filter(Boolean).map((s) => hostPort(s, url));
    if (nodes.length === 0) throw new InputError(`--redis ${url} names no cluster member (redis-cluster://host:port,host:port)`);
    return new Cluster(nodes, {
      enableAutoPipelining: true,
      redisOptions: { maxRetriesPerRequest: null, connectionName: name },
      clusterRetryStrategy: (times) => Math.min(100 * times, 2_000),
    });
  }
  if (!/^rediss?:\/\//.test(url)) throw new InputError(`--redis ${url} is not a Redis URL (redis://host:port or redis-cluster://host:port,host:port)`);
  return new Redis(url, {
    maxRetriesPerRequest: null,
    enableAutoPipelining: true,
    connectionName: name,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
  });
}

/** Closes a connection, waiting for replies already on the way. */
export async function closeRedis(r: RedisConnection): Promise<void> {
  try {
    await r.quit();
  } catch {
    r.disconnect();
  }
}
