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

/** An AWS region name, e.g. us-east-1. */
export const AwsRegion = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'is not an AWS region like us-east-1');

const PositivePrice = z.number({ error: 'must be a number (USD per hour)' }).positive('must be a positive price in USD per hour').max(1000, 'is over 1000 USD per hour: a typo?');

/**
 * On-demand prices as the operator ships them: EC2 has no price API on the
 * instance's side of the fence, so the table is a file with the date it was
 * taken, to be refreshed from AWS's price list.
 */
export const PriceTable = z
  .object({
    region: AwsRegion,
    /** The day the prices were read off AWS's price list. */
    takenAt: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date like 2026-11-01'),
    source: z.string().min(1),
    currency: z.literal('USD'),
    /** Linux on-demand price per instance type, USD per hour. */
    onDemand: z.record(z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, 'is not an instance type like r5.xlarge'), PositivePrice).refine((r) => Object.keys(r).length > 0, 'lists no prices'),
  })
  .strict();
export type PriceTable = z.infer<typeof PriceTable>;

/** One instance type as the catalog knows it: shape from DescribeInstanceTypes, prices from the table and the spot market. */
export const CatalogEntry = z.object({
  name: z.string().min(1),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().positive(),
  /** What its link carries in a burst, Gbit/s (the network card's peak; "Up to 10 Gigabit" counts as 10): what an agent on it registers. */
  networkGbps: z.number().positive().nullable(),
  architectures: z.array(z.string()),
  onDemandPricePerHour: z.number().positive(),
  /** The current spot price per availability zone; empty where spot is not offered. */
  spotPriceByZone: z.record(z.string(), z.number().nonnegative()),
});
export type CatalogEntry = z.infer<typeof CatalogEntry>;

/** What a new node must hold. */
export const CapacityRequest = z.object({
  memoryBytes: z.number().int().positive(),
  cpus: z.number().positive(),
  /** spot, on-demand, or spot first falling back to on-demand. */
  lifecycle: z.enum(['spot', 'on-demand', 'spot-then-on-demand']),
  /** Zones to launch in (the subnets the operator configured); empty: any the prices name. */
  zones: z.array(z.string()).default([]),
  architecture: z.string().default('x86_64'),
});
export type CapacityRequest = z.input<typeof CapacityRequest>;

/** One place to try a launch: a type, a zone (null: wherever the subnet is) and a market, with its price. */
export const LaunchCandidate = z.object({
  instanceType: z.string(),
  zone: z.string().nullable(),
  lifecycle: Lifecycle,
  pricePerHour: z.number().nonnegative(),
});
export type LaunchCandidate = z.infer<typeof LaunchCandidate>;
