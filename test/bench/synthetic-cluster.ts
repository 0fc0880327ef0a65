import type { ClusterSnapshot, NodeInfo, SessionSnapshot } from '../../src/core/cluster.js';

const GiB = 2 ** 30;

/** A deterministic pseudo-random sequence (mulberry32), so runs compare. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TYPES = [
  { name: 'r5.xlarge', memoryBytes: 32 * GiB, cpus: 4, price: 0.252 },
  { name: 'r5.2xlarge', memoryBytes: 64 * GiB, cpus: 8, price: 0.504 },
  { name: 'm5.xlarge', memoryBytes: 16 * GiB, cpus: 4, price: 0.192 },
];

/**
 * A cluster shaped like ../shared/notes/workload-facts.md: a third spot,
 * memory lognormal around 0.7 GiB, most sessions idle, a few busy, one
 * interruption notice and one rebalance recommendation, usage samples for
 * right-sizing.
 */
export function syntheticCluster(sessions: number, nodes: number, now: Date, seed = 1): ClusterSnapshot {
  const r = rng(seed);
  const iso = (msAgo: number): string => new Date(now.getTime() - msAgo).toISOString();
  const nodeList: NodeInfo[] = Array.from({ length: nodes }, (_, i) => {
    const t = TYPES[i % TYPES.length] as (typeof TYPES)[number];
    const spot = i % 3 === 0;
    return { name: `n${i}`, instanceId: `i-${i}`, instanceType: t.name, zone: `us-east-1${'abc'[i % 3]}`, lifecycle: spot ? 'spot' : 'on-demand', pricePerHour: spot ? t.price * 0.35 : t.price, memoryBytes: t.memoryBytes, cpus: t.cpus, state: 'ready', registeredAt: iso(86_400_000) };
  });
  const sessionList: SessionSnapshot[] = Array.from({ length: sessions }, (_, i) => {
    const gib = Math.min(12, Math.exp(Math.log(0.7) + 1.0 * Math.sqrt(-2 * Math.log(r() || 1e-9)) * Math.cos(2 * Math.PI * r())));
    const idleMin = r() < 0.7 ? 40 + r() * 600 : r() * 20;
    const samples = Array.from({ length: 12 }, (_, k) => ({ at: iso((12 - k) * 5 * 60_000), rssBytes: Math.round(gib * GiB * (0.8 + 0.2 * r())), cpuCores: r() * 0.3 }));
    return {
      id: `s${i.toString(16).padStart(8, '0')}`,
      user: `u${i}`,
      node: `n${i % nodes}`,
      state: 'running',
      rssBytes: Math.round(gib * GiB),
      cpuCores: idleMin > 30 ? 0.01 : r(),
      busy: r() < 0.03,
      connections: idleMin > 30 ? 0 : 1,
      lastActivityAt: iso(idleMin * 60_000),
      lastDisruptionAt: r() < 0.1 ? iso(r() * 3_600_000) : null,
      samples,
    };
  });
  return {
    nodes: nodeList,
    sessions: sessionList,
    notices: [
      { id: 'int-0', node: 'n0', kind: 'interruption', action: 'terminate', deadline: new Date(now.getTime() + 120_000).toISOString(), receivedAt: now.toISOString() },
      { id: 'reb-3', node: 'n3', kind: 'rebalance', action: null, deadline: null, receivedAt: now.toISOString() },
    ],
    inFlight: [],
    instanceTypes: [],
    lastRuns: {},
  };
}
