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
      NetworkCards: z.array(z.object({ BaselineBandwidthInGbps: z.number().optional() })).optional(),
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

/** "Up to 12.5 Gigabit", "25 Gigabit": the card's baseline when AWS gives it, else the headline number. */
export function networkGbps(info: z.infer<typeof InstanceTypeItem>['NetworkInfo']): number | null {
  const baseline = info?.NetworkCards?.[0]?.BaselineBandwidthInGbps;
  if (baseline) return baseline;
  const m = /([\d.]+)\s*Gigabit/i.exec(info?.NetworkPerformance ?? '');
  return m ? Number(m[1]) : null;
}

/** DescribeInstanceTypes for the named types, every page. */
export async function describeShapes(ec2: EC2Client, types: readonly string[], retry?: Partial<RetryOptions>): Promise<InstanceShape[]> {
  const out: InstanceShape[] = [];
  // The API refuses MaxResults together with InstanceTypes; it pages by itself.
  const pages = everyPage('DescribeInstanceTypes', DescribeInstanceTypesAnswer, (NextToken) => ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: types as _InstanceType[], NextToken })), retry);
  for await (const page of pages) {
    for (const t of page.InstanceTypes) {
      out.push({
        name: t.InstanceType,
        memoryBytes: t.MemoryInfo.SizeInMiB * 2 ** 20,
        cpus: t.VCpuInfo.DefaultVCpus,
        networkGbps: networkGbps(t.NetworkInfo),
        architectures: t.ProcessorInfo?.SupportedArchitectures ?? [],
        spotSupported: t.SupportedUsageClasses?.includes('spot') ?? false,
      });
    }
  }
  const missing = types.filter((t) => !out.some((s) => s.name === t));
  if (missing.length) throw new CloudError('cloud_failed', 'InvalidInstanceType', `EC2 does not describe ${missing.join(', ')} in this region: remove them from the configured instance types`);
  return out;
}

/**
 * The link EC2 gives one instance type, Gbit/s: how an agent on EC2 learns
 * its own node's (`hubshift agent --network-gbps auto`), since the instance
 * metadata service says the type but not its bandwidth.
 */
export async function describeNetworkGbps(ec2: EC2Client, type: string, retry?: Partial<RetryOptions>): Promise<number> {
  const [shape] = await describeShapes(ec2, [type], retry);
  if (!shape?.networkGbps) throw new CloudError('cloud_failed', 'NoNetworkPerformance', `EC2 describes no network bandwidth for ${type}: give the node's --network-gbps`);
  return shape.networkGbps;
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
