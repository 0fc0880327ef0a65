import { DescribeInstanceTypesCommand, DescribeSpotPriceHistoryCommand, type EC2Client, type _InstanceType } from '@aws-sdk/client-ec2';
import { z } from 'zod';
import { CloudError } from '../../core/errors.js';
import type { InstanceShape, SpotQuote } from '../../pricing/catalog.js';
import { everyPage, type RetryOptions } from './aws-retry.js';

// Only what hubshift reads of AWS's answers, parsed: a changed shape fails here, by name.
const InstanceTypeItem = z.object({
  InstanceType: z.string(),
  VCpuInfo: z.object({ DefaultVCpus: z.number().int().positive() }),
  MemoryInfo: z.object({ SizeInMiB: z.number().int().positive() }),
  NetworkInfo: z
    .object({
      NetworkPerformance: z.string().optional(),
      NetworkCards: z.array(z.object({ PeakBandwidthInGbps: z.number().optional() })).optional(),
    })
    .optional(),
  ProcessorInfo: z.object({ SupportedArchitectures: z.array(z.string()) }).optional(),
  SupportedUsageClasses: z.array(z.string()).optional(),
});
const DescribeInstanceTypesAnswer = z.object({ InstanceTypes: z.array(InstanceTypeItem).default([]), NextToken: z.string().optional() });

const SpotPriceItem = z.object({
  AvailabilityZone: z.string(),
  InstanceType: z.string(),
  ProductDescription: z.string(),
  SpotPrice: z.string().regex(/^\d+(\.\d+)?$/, 'is not a price'),
  Timestamp: z.date(),
});
const DescribeSpotPriceHistoryAnswer = z.object({ SpotPriceHistory: z.array(SpotPriceItem).default([]), NextToken: z.string().optional() });

type NetworkInfo = z.infer<typeof InstanceTypeItem>['NetworkInfo'];

/** The headline figure of "Up to 12.5 Gigabit", "25 Gigabit". */
function headlineGbps(info: NetworkInfo): number | null {
  const m = /([\d.]+)\s*Gigabit/i.exec(info?.NetworkPerformance ?? '');
  return m ? Number(m[1]) : null;
}

/**
 * What the type's link carries in a burst: the card's peak when AWS gives
 * it, else the headline number. hubshift sizes by it what lasts seconds to
 * two minutes (a checkpoint's S3 parts, an evacuation's moves), which an
 * "Up to" type serves from its network credits (an m7i.large: 12.5 Gbit/s
 * against a 0.781 baseline).
 */
export function networkGbps(info: NetworkInfo): number | null {
  return info?.NetworkCards?.[0]?.PeakBandwidthInGbps || headlineGbps(info);
}

/** DescribeInstanceTypes for the named types, every page; refused, with `hint`, when one is not described. */
async function describeTypes(ec2: EC2Client, types: readonly string[], hint: string, retry?: Partial<RetryOptions>): Promise<z.infer<typeof InstanceTypeItem>[]> {
  const out: z.infer<typeof InstanceTypeItem>[] = [];
  // The API refuses MaxResults together with InstanceTypes; it pages by itself.
  const pages = everyPage('DescribeInstanceTypes', DescribeInstanceTypesAnswer, (NextToken) => ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: types as _InstanceType[], NextToken })), retry);
  for await (const page of pages) out.push(...page.InstanceTypes);
  const missing = types.filter((t) => !out.some((s) => s.InstanceType === t));
  if (missing.length) throw new CloudError('cloud_failed', 'InvalidInstanceType', `EC2 does not describe ${missing.join(', ')} in this region: ${hint}`);
  return out;
}

/** DescribeInstanceTypes for the named types, as the catalog's shapes. */
export async function describeShapes(ec2: EC2Client, types: readonly string[], retry?: Partial<RetryOptions>): Promise<InstanceShape[]> {
  return (await describeTypes(ec2, types, 'remove them from the configured instance types', retry)).map((t) => ({
    name: t.InstanceType,
    memoryBytes: t.MemoryInfo.SizeInMiB * 2 ** 20,
    cpus: t.VCpuInfo.DefaultVCpus,
    networkGbps: networkGbps(t.NetworkInfo),
    architectures: t.ProcessorInfo?.SupportedArchitectures ?? [],
    spotSupported: t.SupportedUsageClasses?.includes('spot') ?? false,
  }));
}

/**
 * The link EC2 gives one instance type (networkGbps), Gbit/s: how an agent
 * on EC2 learns its own node's (`hubshift agent --network-gbps auto`), since
 * the instance metadata service says the type but not its bandwidth.
 */
export async function describeNetworkGbps(ec2: EC2Client, type: string, retry?: Partial<RetryOptions>): Promise<number> {
  const [t] = await describeTypes(ec2, [type], 'check the node\'s --node-type', retry);
  const gbps = t ? networkGbps(t.NetworkInfo) : null;
  if (!gbps) throw new CloudError('cloud_failed', 'NoNetworkPerformance', `EC2 describes no network bandwidth for ${type}: give the node's --network-gbps`);
  return gbps;
}

/**
 * The current spot price of each type in each zone: DescribeSpotPriceHistory
 * from now (it then gives the price in force), Linux/UNIX, every page.
 */
export async function describeSpotQuotes(ec2: EC2Client, types: readonly string[], zones: readonly string[], now: Date, retry?: Partial<RetryOptions>): Promise<SpotQuote[]> {
  const out: SpotQuote[] = [];
  const pages = everyPage(
    'DescribeSpotPriceHistory',
    DescribeSpotPriceHistoryAnswer,
    (NextToken) =>
      ec2.send(
        new DescribeSpotPriceHistoryCommand({
          InstanceTypes: types as _InstanceType[],
          ProductDescriptions: ['Linux/UNIX'],
          StartTime: now,
          Filters: zones.length ? [{ Name: 'availability-zone', Values: [...zones] }] : undefined,
          MaxResults: 1000,
          NextToken,
        }),
      ),
    retry,
  );
  for await (const page of pages) {
    for (const p of page.SpotPriceHistory) out.push({ instanceType: p.InstanceType, zone: p.AvailabilityZone, pricePerHour: Number(p.SpotPrice), at: p.Timestamp.toISOString() });
  }
  return out;
}
