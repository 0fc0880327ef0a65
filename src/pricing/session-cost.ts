import type { NodeInfo } from '../core/cluster.js';

/** S3 Standard, USD per GB-month (us-east-1, first 50 TB). */
export const STORE_USD_PER_GB_MONTH = 0.023;
const HOURS_PER_MONTH = 730;

/** A session's share of its node's price: the node's cost times the fraction of its memory the session holds. */
export function sessionShareCostPerHour(node: Pick<NodeInfo, 'pricePerHour' | 'memoryBytes'>, bytes: number): number {
  return (node.pricePerHour * bytes) / node.memoryBytes;
}

/** Keeping `bytes` of checkpoint in the store, USD per hour. */
export function storeCostPerHour(bytes: number): number {
  return ((bytes / 1e9) * STORE_USD_PER_GB_MONTH) / HOURS_PER_MONTH;
}

/** USD per GB-hour of a node: what placement compares. */
export function pricePerGbHour(node: Pick<NodeInfo, 'pricePerHour' | 'memoryBytes'>): number {
  return node.pricePerHour / (node.memoryBytes / 1e9);
}
