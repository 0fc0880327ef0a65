import type { ClusterSnapshot, NodeInfo, SessionSnapshot } from '../../src/core/cluster.js';
import { DEFAULT_GUARDS, Guards, Policy, type PolicySet } from '../../src/policy/policy-schema.js';

export const GiB = 2 ** 30;
/** A Monday, 21:00 UTC: outside the default quiet hours. */
export const NOW = new Date('2026-11-23T21:00:00Z');
export const ago = (ms: number, from = NOW): string => new Date(from.getTime() - ms).toISOString();
export const later = (ms: number, from = NOW): string => new Date(from.getTime() + ms).toISOString();

export function node(name: string, over: Partial<NodeInfo> = {}): NodeInfo {
  return { name, instanceId: `i-${name}`, instanceType: 'r5.xlarge', zone: 'us-east-1a', lifecycle: 'on-demand', pricePerHour: 0.252, memoryBytes: 32 * GiB, cpus: 4, state: 'ready', registeredAt: ago(86_400_000), ...over };
}

export function session(id: string, nodeName: string | null, over: Partial<SessionSnapshot> = {}): SessionSnapshot {
  return { id, user: `u-${id}`, node: nodeName, state: 'running', rssBytes: GiB, cpuCores: 0.5, busy: false, connections: 1, lastActivityAt: ago(60_000), lastDisruptionAt: null, samples: [], ...over };
}

export function snapshot(over: Partial<ClusterSnapshot>): ClusterSnapshot {
  return { nodes: [], sessions: [], notices: [], inFlight: [], instanceTypes: [], lastRuns: {}, ...over };
}

export function policies(list: Array<Record<string, unknown>>, guards: Record<string, unknown> | null = null): PolicySet {
  return {
    policies: list.map((p, i) => {
      const parsed = Policy.parse(p);
      return { ...parsed, name: parsed.name ?? `${parsed.kind}-${i}` };
    }),
    guards: guards ? Guards.parse({ kind: 'guards', ...guards }) : DEFAULT_GUARDS,
  };
}
