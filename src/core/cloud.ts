import { z } from 'zod';
import { Lifecycle } from './cluster.js';

/** A machine to create: what the provider is asked for. */
export const HostSpec = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,30}$/, 'host names are 1-31 of a-z 0-9 - and start with a letter or digit'),
  instanceType: z.string().min(1),
  lifecycle: Lifecycle,
  pricePerHour: z.number().nonnegative(),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().positive(),
});
export type HostSpec = z.infer<typeof HostSpec>;

/** A machine a provider made, with its agent. */
export const HostRecord = HostSpec.extend({
  /** The host's own address on the segment its sessions share. */
  address: z.string(),
  agentUrl: z.string().url(),
  tokenFile: z.string(),
  /** The agent's pid (local hosts), for stopping it by pid. */
  agentPid: z.number().int().positive().nullable(),
  /** Its instance metadata endpoint (IMDS on EC2, the project's own locally). */
  metadataUrl: z.string().url(),
  dataDir: z.string(),
});
export type HostRecord = z.infer<typeof HostRecord>;
