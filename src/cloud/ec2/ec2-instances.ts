import {
  AssignPrivateIpAddressesCommand,
  CreateFleetCommand,
  DescribeInstancesCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2Client,
  type Tag,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { z } from 'zod';
import type { LaunchCandidate } from '../../core/cloud.js';
import { CloudError } from '../../core/errors.js';
import { cloudError, cloudErrorOf } from './aws-errors.js';
import { callAws, everyPage, withAwsRetry, type RetryOptions } from './aws-retry.js';
import type { Ec2Config } from './ec2-config.js';

export const CLUSTER_TAG = 'hubshift:cluster';

// The fields hubshift reads of DescribeInstances.
const InstanceItem = z.object({
  InstanceId: z.string(),
  InstanceType: z.string(),
  State: z.object({ Name: z.string() }),
  PrivateIpAddress: z.string().optional(),
  InstanceLifecycle: z.string().optional(),
  Placement: z.object({ AvailabilityZone: z.string().optional() }).optional(),
  NetworkInterfaces: z
    .array(
      z.object({
        NetworkInterfaceId: z.string(),
        Attachment: z.object({ DeviceIndex: z.number().int() }).optional(),
        PrivateIpAddresses: z.array(z.object({ PrivateIpAddress: z.string(), Primary: z.boolean().optional() })).default([]),
      }),
    )
    .default([]),
  Tags: z.array(z.object({ Key: z.string(), Value: z.string() })).default([]),
});
export type Ec2Instance = z.infer<typeof InstanceItem>;
const DescribeInstancesAnswer = z.object({ Reservations: z.array(z.object({ Instances: z.array(InstanceItem).default([]) })).default([]), NextToken: z.string().optional() });

const CreateFleetAnswer = z.object({
  Instances: z.array(z.object({ InstanceIds: z.array(z.string()).default([]), InstanceType: z.string().optional(), Lifecycle: z.string().optional() })).default([]),
  Errors: z.array(z.object({ ErrorCode: z.string().optional(), ErrorMessage: z.string().optional(), Lifecycle: z.string().optional() })).default([]),
});
const RunInstancesAnswer = z.object({ Instances: z.array(z.object({ InstanceId: z.string() })).min(1) });

/** One candidate tried and why it did not launch: the launch's account of itself. */
export interface LaunchAttempt {
  candidate: LaunchCandidate;
  error: string;
}

export interface Launched {
  instanceId: string;
  candidate: LaunchCandidate;
  attempts: LaunchAttempt[];
}

export class Ec2Instances {
  constructor(
    private readonly ec2: EC2Client,
    private readonly config: Ec2Config,
    private readonly retry: Partial<RetryOptions> = {},
  ) {}

  private tags(extra: Record<string, string>): Tag[] {
    return Object.entries({ [CLUSTER_TAG]: this.config.cluster, ...extra }).map(([Key, Value]) => ({ Key, Value }));
  }

  private subnetFor(c: LaunchCandidate): string | undefined {
    if (c.zone === null) return undefined;
    const s = this.config.subnets[c.zone];
    if (!s) throw new CloudError('cloud_failed', 'NoSubnet', `no subnet is configured for ${c.zone} (subnets in the EC2 config)`);
    return s;
  }

  /**
   * Launches one instance at the first candidate that has capacity, in
   * order (cheapest first). Capacity errors (InsufficientInstanceCapacity,
   * SpotMaxPriceTooLow, quotas) move on to the next candidate; a denied
   * call stops at once, since no other candidate can succeed either.
   */
  async launch(candidates: readonly LaunchCandidate[], tags: Record<string, string> = {}): Promise<Launched> {
    const attempts: LaunchAttempt[] = [];
    for (const candidate of candidates) {
      try {
        const instanceId = this.config.launchMode === 'fleet' ? await this.createFleet(candidate, tags) : await this.runInstances(candidate, tags);
        return { instanceId, candidate, attempts };
      } catch (err) {
        const e = cloudError(`launching ${candidate.instanceType}`, err);
        if (e.code !== 'cloud_capacity') throw e;
        attempts.push({ candidate, error: e.message });
      }
    }
    const tried = attempts.map((a) => `${a.candidate.instanceType} ${a.candidate.lifecycle} in ${a.candidate.zone ?? 'any zone'}: ${a.error}`).join('; ');
    throw new CloudError('cloud_capacity', 'InsufficientInstanceCapacity', `no candidate had capacity (${attempts.length} tried: ${tried}); widen the instance types or zones, or try again later`);
  }

  private async createFleet(c: LaunchCandidate, tags: Record<string, string>): Promise<string> {
    const what = `CreateFleet ${c.instanceType} ${c.lifecycle} in ${c.zone ?? 'any zone'}`;
    const answer = await callAws(
      what,
      CreateFleetAnswer,
      () =>
        this.ec2.send(
          new CreateFleetCommand({
            Type: 'instant',
            LaunchTemplateConfigs: [
              {
                LaunchTemplateSpecification: { LaunchTemplateName: this.config.launchTemplate.name, Version: this.config.launchTemplate.version },
                Overrides: [{ InstanceType: c.instanceType as _InstanceType, SubnetId: this.subnetFor(c), AvailabilityZone: c.zone ?? undefined }],
              },
            ],
            TargetCapacitySpecification: { TotalTargetCapacity: 1, DefaultTargetCapacityType: c.lifecycle === 'spot' ? 'spot' : 'on-demand' },
            SpotOptions: c.lifecycle === 'spot' ? { AllocationStrategy: 'price-capacity-optimized' } : undefined,
            TagSpecifications: [{ ResourceType: 'instance', Tags: this.tags(tags) }],
          }),
        ),
      this.retry,
    );
    const id = answer.Instances.flatMap((i) => i.InstanceIds)[0];
    if (id) return id;
    // An instant fleet reports why it launched nothing in Errors, not as an exception.
    const e = answer.Errors[0];
    throw cloudErrorOf(what, e?.ErrorCode ?? 'UnfulfillableCapacity', e?.ErrorMessage ?? 'the fleet launched no instance');
  }

  private async runInstances(c: LaunchCandidate, tags: Record<string, string>): Promise<string> {
    const answer = await callAws(
      `RunInstances ${c.instanceType} ${c.lifecycle} in ${c.zone ?? 'any zone'}`,
      RunInstancesAnswer,
      () =>
        this.ec2.send(
          new RunInstancesCommand({
            LaunchTemplate: { LaunchTemplateName: this.config.launchTemplate.name, Version: this.config.launchTemplate.version },
            InstanceType: c.instanceType as _InstanceType,
            MinCount: 1,
            MaxCount: 1,
            SubnetId: this.subnetFor(c),
            InstanceMarketOptions: c.lifecycle === 'spot' ? { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } } : undefined,
            TagSpecifications: [{ ResourceType: 'instance', Tags: this.tags(tags) }],
          }),
        ),
      this.retry,
    );
    return answer.Instances[0]!.InstanceId;
  }

  /** Instances of this cluster (tagged), pending or running, every page; or the named ones. */
  async describe(instanceIds?: readonly string[]): Promise<Ec2Instance[]> {
    const out: Ec2Instance[] = [];
    const pages = everyPage(
      'DescribeInstances',
      DescribeInstancesAnswer,
      (NextToken) =>
        this.ec2.send(
          new DescribeInstancesCommand(
            instanceIds
              ? { InstanceIds: [...instanceIds], NextToken }
              : {
                  Filters: [
                    { Name: `tag:${CLUSTER_TAG}`, Values: [this.config.cluster] },
                    { Name: 'instance-state-name', Values: ['pending', 'running'] },
                  ],
                  MaxResults: 1000,
                  NextToken,
                },
          ),
        ),
      this.retry,
    );
    for await (const page of pages) for (const r of page.Reservations) out.push(...r.Instances);
    return out;
  }

  async terminate(instanceIds: readonly string[]): Promise<void> {
    if (instanceIds.length === 0) return;
    await withAwsRetry(`TerminateInstances ${instanceIds.join(' ')}`, () => this.ec2.send(new TerminateInstancesCommand({ InstanceIds: [...instanceIds] })), this.retry);
  }

  /**
   * Moves a secondary private IP onto an instance's primary interface, taking
   * it from wherever it was (AllowReassignment): the session's address
   * follows it to its new node.
   */
  async assignAddress(ip: string, instanceId: string): Promise<string> {
    const [inst] = await this.describe([instanceId]);
    const eni = inst?.NetworkInterfaces.find((n) => (n.Attachment?.DeviceIndex ?? 0) === 0);
    if (!inst || !eni) throw new CloudError('cloud_failed', 'InvalidInstanceID.NotFound', `instance ${instanceId} has no primary network interface to take ${ip}`);
    if (!eni.PrivateIpAddresses.some((a) => a.PrivateIpAddress === ip)) {
      await withAwsRetry(
        `AssignPrivateIpAddresses ${ip} to ${eni.NetworkInterfaceId}`,
        () => this.ec2.send(new AssignPrivateIpAddressesCommand({ NetworkInterfaceId: eni.NetworkInterfaceId, PrivateIpAddresses: [ip], AllowReassignment: true })),
        this.retry,
      );
    }
    return eni.NetworkInterfaceId;
  }
}
