import {
  AssignPrivateIpAddressesCommand,
  CreateFleetCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeSpotPriceHistoryCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type InstanceTypeInfo,
  type Instance,
  type SpotPrice,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Ec2Config } from '../../src/cloud/ec2/ec2-config.js';
import { Ec2Provider } from '../../src/cloud/ec2/ec2-provider.js';
import { CloudError } from '../../src/core/errors.js';
import { parsePriceTable } from '../../src/pricing/price-table.js';

const ec2Mock = mockClient(EC2Client);
const GiB = 2 ** 30;

const CONFIG: Ec2Config = {
  region: 'us-east-1',
  cluster: 'test',
  launchTemplate: { name: 'hubshift-agent', version: '$Latest' },
  subnets: { 'us-east-1a': 'subnet-0aaa', 'us-east-1b': 'subnet-0bbb' },
  instanceTypes: ['r5.large', 'r5.xlarge', 'm5.xlarge'],
  launchMode: 'fleet',
  agentPort: 7400,
  agentTokenFile: '/etc/hubshift/agent.token',
  dataDir: '/var/lib/hubshift',
};
const PRICES = parsePriceTable(
  'region: us-east-1\ntakenAt: "2026-11-24"\nsource: test\ncurrency: USD\nonDemand: {r5.large: 0.126, r5.xlarge: 0.252, m5.xlarge: 0.192}\n',
  'test',
);

/** An AWS service error as the SDK raises it: name is AWS's code. */
function awsError(code: string, status: number, message = code): EC2ServiceException {
  return new EC2ServiceException({ name: code, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status, requestId: 'req-1' }, message });
}

function shape(name: string, vcpus: number, mib: number, perf: string): InstanceTypeInfo {
  return {
    InstanceType: name as _InstanceType,
    VCpuInfo: { DefaultVCpus: vcpus },
    MemoryInfo: { SizeInMiB: mib },
    NetworkInfo: { NetworkPerformance: perf },
    ProcessorInfo: { SupportedArchitectures: ['x86_64'] },
    SupportedUsageClasses: ['on-demand', 'spot'],
  } as InstanceTypeInfo;
}

function quote(type: string, zone: string, price: string, at: string): SpotPrice {
  return { AvailabilityZone: zone, InstanceType: type, ProductDescription: 'Linux/UNIX', SpotPrice: price, Timestamp: new Date(at) } as SpotPrice;
}

function instance(id: string, state: string, extra: Record<string, unknown> = {}): Instance {
  return {
    InstanceId: id,
    InstanceType: 'r5.xlarge',
    State: { Code: state === 'running' ? 16 : 0, Name: state },
    PrivateIpAddress: state === 'running' ? '10.0.1.20' : undefined,
    Placement: { AvailabilityZone: 'us-east-1b' },
    InstanceLifecycle: 'spot',
    NetworkInterfaces: [{ NetworkInterfaceId: `eni-${id.slice(2)}`, Attachment: { DeviceIndex: 0 }, PrivateIpAddresses: [{ PrivateIpAddress: '10.0.1.20', Primary: true }] }],
    Tags: [{ Key: 'hubshift:cluster', Value: 'test' }],
    ...extra,
  } as Instance;
}

function mockCatalog(): void {
  // Two pages each: pagination must be followed.
  ec2Mock
    .on(DescribeInstanceTypesCommand)
    .resolvesOnce({ InstanceTypes: [shape('r5.large', 2, 16384, 'Up to 10 Gigabit'), shape('r5.xlarge', 4, 32768, 'Up to 10 Gigabit')], NextToken: 'p2' })
    .resolvesOnce({ InstanceTypes: [shape('m5.xlarge', 4, 16384, 'Up to 10 Gigabit')] });
  ec2Mock
    .on(DescribeSpotPriceHistoryCommand)
    .resolvesOnce({
      SpotPriceHistory: [quote('r5.large', 'us-east-1a', '0.0500', '2026-11-24T09:00:00Z'), quote('r5.large', 'us-east-1a', '0.0410', '2026-11-24T11:00:00Z'), quote('r5.xlarge', 'us-east-1b', '0.0880', '2026-11-24T10:00:00Z')],
      NextToken: 'next',
    })
    .resolvesOnce({ SpotPriceHistory: [quote('r5.large', 'us-east-1b', '0.0450', '2026-11-24T10:30:00Z'), quote('m5.xlarge', 'us-east-1a', '0.0700', '2026-11-24T10:30:00Z')] });
}

const sleeps: number[] = [];
function provider(config: Partial<Ec2Config> = {}, waitForAgent: (url: string) => Promise<void> = async () => undefined): Ec2Provider {
  return new Ec2Provider(new EC2Client({ region: 'us-east-1', maxAttempts: 1 }), { ...CONFIG, ...config }, PRICES, {
    retry: { sleep: async (ms) => void sleeps.push(ms), random: () => 1 },
    sleep: async () => undefined,
    waitForAgent,
    now: () => new Date('2026-11-24T12:00:00Z'),
  });
}

beforeEach(() => {
  ec2Mock.reset();
  sleeps.length = 0;
});

describe('EC2 catalog', () => {
  it('should follow every page and keep the newest spot price per type and zone', async () => {
    mockCatalog();
    const catalog = await provider().catalog();
    expect(catalog.map((c) => c.name)).toEqual(['m5.xlarge', 'r5.large', 'r5.xlarge']);
    const r5l = catalog.find((c) => c.name === 'r5.large')!;
    expect(r5l).toMatchObject({ memoryBytes: 16 * GiB, cpus: 2, networkGbps: 10, onDemandPricePerHour: 0.126, spotPriceByZone: { 'us-east-1a': 0.041, 'us-east-1b': 0.045 } });
    expect(ec2Mock.commandCalls(DescribeInstanceTypesCommand)[1]!.args[0].input.NextToken).toBe('p2');
    const spotCall = ec2Mock.commandCalls(DescribeSpotPriceHistoryCommand)[0]!.args[0].input;
    expect(spotCall).toMatchObject({ ProductDescriptions: ['Linux/UNIX'], Filters: [{ Name: 'availability-zone', Values: ['us-east-1a', 'us-east-1b'] }] });
    expect(ec2Mock.commandCalls(DescribeSpotPriceHistoryCommand)[1]!.args[0].input.NextToken).toBe('next');
  });

  it('should refuse a described type the price table has no price for', async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: [shape('r5.2xlarge', 8, 65536, 'Up to 10 Gigabit')] });
    ec2Mock.on(DescribeSpotPriceHistoryCommand).resolves({ SpotPriceHistory: [] });
    await expect(provider({ instanceTypes: ['r5.2xlarge'] }).catalog()).rejects.toThrow(/no on-demand price for r5.2xlarge.*add it/);
  });

  it('should refuse a configured type EC2 does not describe', async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: [shape('r5.large', 2, 16384, '10 Gigabit')] });
    ec2Mock.on(DescribeSpotPriceHistoryCommand).resolves({ SpotPriceHistory: [] });
    await expect(provider({ instanceTypes: ['r5.large', 'r5.huge'] }).catalog()).rejects.toThrow(/does not describe r5.huge/);
  });
});

describe('EC2 launches', () => {
  function mockRunning(id: string): void {
    ec2Mock
      .on(DescribeInstancesCommand, { InstanceIds: [id] })
      .resolvesOnce({ Reservations: [{ Instances: [instance(id, 'pending')] }] })
      .resolves({ Reservations: [{ Instances: [instance(id, 'running')] }] });
  }

  it('should take the cheapest fit and fall through capacity errors to the next candidate', async () => {
    mockCatalog();
    ec2Mock
      .on(CreateFleetCommand)
      .resolvesOnce({ Instances: [], Errors: [{ ErrorCode: 'InsufficientInstanceCapacity', ErrorMessage: 'no capacity', Lifecycle: 'spot' }] })
      .resolvesOnce({ Instances: [], Errors: [{ ErrorCode: 'SpotMaxPriceTooLow', ErrorMessage: 'price', Lifecycle: 'spot' }] })
      .resolvesOnce({ Instances: [{ InstanceIds: ['i-0abc'], InstanceType: 'r5.xlarge', Lifecycle: 'spot' }], Errors: [] });
    mockRunning('i-0abc');
    const agentsAsked: string[] = [];
    const r = await provider({}, async (url) => void agentsAsked.push(url)).launchFitting({ memoryBytes: 12 * GiB, cpus: 2, lifecycle: 'spot-then-on-demand' });
    const tried = ec2Mock.commandCalls(CreateFleetCommand).map((c) => {
      const i = c.args[0].input;
      return `${i.LaunchTemplateConfigs![0]!.Overrides![0]!.InstanceType} ${i.LaunchTemplateConfigs![0]!.Overrides![0]!.SubnetId} ${i.TargetCapacitySpecification!.DefaultTargetCapacityType}`;
    });
    // 12 GiB + 1 GiB reserved: r5.large (16 GiB) fits, m5.xlarge (16 GiB) fits; spot cheapest first.
    expect(tried).toEqual(['r5.large subnet-0aaa spot', 'r5.large subnet-0bbb spot', 'm5.xlarge subnet-0aaa spot']);
    expect(r.attempts.map((a) => a.error)).toEqual([expect.stringMatching(/InsufficientInstanceCapacity/), expect.stringMatching(/SpotMaxPriceTooLow/)]);
    expect(r.host).toMatchObject({ name: 'i-0abc', address: '10.0.1.20', agentUrl: 'http://10.0.1.20:7400', lifecycle: 'spot', pricePerHour: 0.088 });
    expect(agentsAsked).toEqual(['http://10.0.1.20:7400']);
    const first = ec2Mock.commandCalls(CreateFleetCommand)[0]!.args[0].input;
    expect(first).toMatchObject({ Type: 'instant', TargetCapacitySpecification: { TotalTargetCapacity: 1 }, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'hubshift:cluster', Value: 'test' }] }] });
  });

  it('should fall back to on-demand when no spot candidate has room', async () => {
    mockCatalog();
    ec2Mock.on(CreateFleetCommand, { TargetCapacitySpecification: { TotalTargetCapacity: 1, DefaultTargetCapacityType: 'spot' } }).resolves({ Instances: [], Errors: [{ ErrorCode: 'InsufficientInstanceCapacity' }] });
    ec2Mock.on(CreateFleetCommand, { TargetCapacitySpecification: { TotalTargetCapacity: 1, DefaultTargetCapacityType: 'on-demand' } }).resolves({ Instances: [{ InstanceIds: ['i-0od'] }] });
    mockRunning('i-0od');
    const r = await provider().launchFitting({ memoryBytes: 12 * GiB, cpus: 2, lifecycle: 'spot-then-on-demand' });
    expect(r.attempts.every((a) => a.candidate.lifecycle === 'spot')).toBe(true);
    // r5.large in 1a and 1b, m5.xlarge in 1a, r5.xlarge in 1b: every spot price quoted.
    expect(r.attempts.length).toBe(4);
    expect(r.host.name).toBe('i-0od');
  });

  it('should stop at once on UnauthorizedOperation, saying what to do', async () => {
    mockCatalog();
    ec2Mock.on(CreateFleetCommand).rejects(awsError('UnauthorizedOperation', 403, 'You are not authorized to perform this operation. Encoded authorization failure message: abc'));
    const err = await provider().launchFitting({ memoryBytes: 4 * GiB, cpus: 1, lifecycle: 'spot' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect(err).toMatchObject({ code: 'cloud_denied', awsCode: 'UnauthorizedOperation' });
    expect((err as Error).message).toMatch(/infra\/terraform\/iam.tf/);
    expect(ec2Mock.commandCalls(CreateFleetCommand)).toHaveLength(1);
  });

  it('should back off on RequestLimitExceeded and then succeed', async () => {
    mockCatalog();
    ec2Mock.on(CreateFleetCommand).rejectsOnce(awsError('RequestLimitExceeded', 503)).rejectsOnce(awsError('RequestLimitExceeded', 503)).resolves({ Instances: [{ InstanceIds: ['i-0late'] }] });
    mockRunning('i-0late');
    const r = await provider().launchFitting({ memoryBytes: 4 * GiB, cpus: 1, lifecycle: 'spot' });
    expect(r.host.name).toBe('i-0late');
    expect(ec2Mock.commandCalls(CreateFleetCommand)).toHaveLength(3);
    // Full jitter with random() = 1: the cap doubles each time.
    expect(sleeps).toEqual([200, 400]);
  });

  it('should give up on endless throttling with a typed error after the attempts', async () => {
    mockCatalog();
    ec2Mock.on(DescribeInstancesCommand).rejects(awsError('RequestLimitExceeded', 503));
    const err = await provider().hosts().catch((e: unknown) => e);
    expect(err).toMatchObject({ awsCode: 'RequestLimitExceeded' });
    expect((err as Error).message).toMatch(/after 8 attempts/);
    expect(sleeps).toHaveLength(7);
  });

  it('should fall through capacity errors that RunInstances throws (HTTP 500, as EC2 sends them)', async () => {
    mockCatalog();
    ec2Mock.on(RunInstancesCommand).rejectsOnce(awsError('InsufficientInstanceCapacity', 500)).resolves({ Instances: [{ InstanceId: 'i-0run' }] });
    mockRunning('i-0run');
    const r = await provider({ launchMode: 'run-instances' }).launchFitting({ memoryBytes: 4 * GiB, cpus: 1, lifecycle: 'spot' });
    expect(r.host.name).toBe('i-0run');
    const calls = ec2Mock.commandCalls(RunInstancesCommand).map((c) => c.args[0].input);
    expect(calls).toHaveLength(2);
    expect(calls[0]).toMatchObject({ MinCount: 1, MaxCount: 1, InstanceMarketOptions: { MarketType: 'spot' }, LaunchTemplate: { LaunchTemplateName: 'hubshift-agent' } });
  });

  it('should terminate an instance whose agent never answers', async () => {
    mockCatalog();
    ec2Mock.on(CreateFleetCommand).resolves({ Instances: [{ InstanceIds: ['i-0dead'] }] });
    mockRunning('i-0dead');
    ec2Mock.on(TerminateInstancesCommand).resolves({});
    await expect(provider({}, async () => Promise.reject(new Error('agent did not answer'))).launchFitting({ memoryBytes: 4 * GiB, cpus: 1, lifecycle: 'spot' })).rejects.toThrow(/did not answer/);
    expect(ec2Mock.commandCalls(TerminateInstancesCommand)[0]!.args[0].input.InstanceIds).toEqual(['i-0dead']);
  });

  it('should refuse an unknown instance type and a request nothing fits', async () => {
    mockCatalog();
    const p = provider();
    await expect(p.create([{ name: 'x', instanceType: 'r5.huge', lifecycle: 'spot', pricePerHour: 0, memoryBytes: GiB, cpus: 1 }])).rejects.toThrow(/unknown instance type r5.huge/);
    await expect(p.launchFitting({ memoryBytes: 64 * GiB, cpus: 1, lifecycle: 'on-demand' })).rejects.toThrow(/no instance type in the catalog fits 64.0 GiB.*largest is r5.xlarge/);
  });
});

describe('EC2 hosts and addresses', () => {
  it('should list the cluster across pages and move an address with reassignment', async () => {
    mockCatalog();
    ec2Mock
      .on(DescribeInstancesCommand, { Filters: [{ Name: 'tag:hubshift:cluster', Values: ['test'] }, { Name: 'instance-state-name', Values: ['pending', 'running'] }], MaxResults: 1000 })
      .resolvesOnce({ Reservations: [{ Instances: [instance('i-01', 'running')] }], NextToken: 't2' });
    ec2Mock.on(DescribeInstancesCommand, { NextToken: 't2' }).resolves({ Reservations: [{ Instances: [instance('i-02', 'running', { InstanceLifecycle: undefined })] }] });
    const p = provider();
    const hosts = await p.hosts();
    expect(hosts.map((h) => [h.name, h.lifecycle, h.pricePerHour])).toEqual([
      ['i-01', 'spot', 0.088],
      ['i-02', 'on-demand', 0.252],
    ]);

    ec2Mock.on(DescribeInstancesCommand, { InstanceIds: ['i-02'] }).resolves({ Reservations: [{ Instances: [instance('i-02', 'running')] }] });
    ec2Mock.on(AssignPrivateIpAddressesCommand).resolves({});
    await p.moveAddress('10.0.1.77', { name: 'i-02', instanceId: 'i-02' });
    expect(ec2Mock.commandCalls(AssignPrivateIpAddressesCommand)[0]!.args[0].input).toEqual({ NetworkInterfaceId: 'eni-02', PrivateIpAddresses: ['10.0.1.77'], AllowReassignment: true });
    // Already there: nothing to do.
    await p.moveAddress('10.0.1.20', { name: 'i-02', instanceId: 'i-02' });
    expect(ec2Mock.commandCalls(AssignPrivateIpAddressesCommand)).toHaveLength(1);
  });
});
