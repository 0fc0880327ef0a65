import type { InstanceTypeInfo, NodeInfo } from '../core/cluster.js';

/** The instance types the cluster has, from its nodes: what right-sizing can move toward until a cloud catalog is configured. */
export function typesFromNodes(nodes: readonly NodeInfo[]): InstanceTypeInfo[] {
  const byName = new Map<string, InstanceTypeInfo>();
  for (const n of nodes) {
    const t = byName.get(n.instanceType) ?? { name: n.instanceType, memoryBytes: n.memoryBytes, cpus: n.cpus, onDemandPricePerHour: 0, spotPricePerHour: null };
    if (n.lifecycle === 'spot') t.spotPricePerHour = Math.min(t.spotPricePerHour ?? Infinity, n.pricePerHour);
    else t.onDemandPricePerHour = Math.max(t.onDemandPricePerHour, n.pricePerHour);
    byName.set(n.instanceType, t);
  }
  return [...byName.values()];
}
