import type { HostRecord, HostSpec } from '../core/cloud.js';

/**
 * Where machines come from: local test hosts (network namespaces on this
 * machine) or EC2. Each host runs an agent; the scheduler learns of it
 * when that agent registers.
 */
export interface Provider {
  readonly kind: 'local' | 'ec2';
  /** The hosts made and not yet removed. */
  hosts(): Promise<HostRecord[]>;
  /** Makes hosts and returns once each one's agent answers. */
  create(specs: readonly HostSpec[]): Promise<HostRecord[]>;
  /** Removes every host made, with everything on it. */
  removeAll(): Promise<void>;
}

/** What the scheduler's workers ask of the cloud while they act on nodes. */
export interface NodeFleet {
  /** Hands an emptied node back (terminates it). */
  release(node: { name: string; instanceId: string }): Promise<void>;
  /** Makes a moved session's address reach its new node (a secondary private IP on EC2). */
  moveAddress(ip: string, to: { name: string; instanceId: string }): Promise<void>;
}
