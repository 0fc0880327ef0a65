import { EC2Client } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Ec2Config } from '../../src/cloud/ec2/ec2-config.js';
import { Ec2Provider } from '../../src/cloud/ec2/ec2-provider.js';
import { parsePriceTable } from '../../src/pricing/price-table.js';
import { Ec2QueryEndpoint, ec2Error, ec2Response, instanceTypeItem } from '../helpers/ec2-query-endpoint.js';

// The real SDK client against a loopback endpoint speaking EC2's query
// protocol: what it sends is checked field by field against the names in
// the EC2 API reference, and it parses AWS's documented XML answers.

const CONFIG: Ec2Config = {
  region: 'us-east-1',
  cluster: 'qp',
  launchTemplate: { name: 'hubshift-agent', version: '3' },
  subnets: { 'us-east-1a': 'subnet-0aaa' },
  instanceTypes: ['r5.large', 'r5.xlarge'],
  launchMode: 'fleet',
  agentPort: 7400,
  agentTokenFile: '/etc/hubshift/agent.token',
  dataDir: '/var/lib/hubshift',
};
const PRICES = parsePriceTable('{region: us-east-1, takenAt: "2026-11-24", source: t, currency: USD, onDemand: {r5.large: 0.126, r5.xlarge: 0.252}}', 't');

const priceItem = (type: string, zone: string, price: string, at: string): string =>
  `<item><instanceType>${type}</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>${price}</spotPrice><timestamp>${at}</timestamp><availabilityZone>${zone}</availabilityZone></item>`;

const instanceXml = (id: string, state: 'pending' | 'running', ip: string): string =>
  `<reservationSet><item><reservationId>r-0123</reservationId><ownerId>123456789012</ownerId><instancesSet><item><instanceId>${id}</instanceId><imageId>ami-0abc</imageId>` +
  `<instanceState><code>${state === 'running' ? 16 : 0}</code><name>${state}</name></instanceState><instanceType>r5.large</instanceType>` +
  `<placement><availabilityZone>us-east-1a</availabilityZone><tenancy>default</tenancy></placement>${state === 'running' ? `<privateIpAddress>${ip}</privateIpAddress>` : ''}` +
  `<instanceLifecycle>spot</instanceLifecycle>` +
  `<networkInterfaceSet><item><networkInterfaceId>eni-0${id.slice(2)}</networkInterfaceId><subnetId>subnet-0aaa</subnetId><attachment><attachmentId>eni-attach-1</attachmentId><deviceIndex>0</deviceIndex><status>attached</status></attachment>` +
  `<privateIpAddressesSet><item><privateIpAddress>${ip}</privateIpAddress><primary>true</primary></item></privateIpAddressesSet></item></networkInterfaceSet>` +
  `<tagSet><item><key>hubshift:cluster</key><value>qp</value></item></tagSet></item></instancesSet></item></reservationSet>`;

const endpoint = new Ec2QueryEndpoint();
let client: EC2Client;
const sleeps: number[] = [];

beforeAll(async () => {
  await endpoint.start();
  client = new EC2Client({ region: 'us-east-1', endpoint: endpoint.url, credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' }, maxAttempts: 1 });
});
afterAll(async () => {
  client?.destroy();
  await endpoint.stop();
});

function provider(config: Partial<Ec2Config> = {}): Ec2Provider {
  return new Ec2Provider(client, { ...CONFIG, ...config }, PRICES, {
    retry: { sleep: async (ms) => void sleeps.push(ms), random: () => 0.5 },
    sleep: async () => undefined,
    waitForAgent: async () => undefined,
    now: () => new Date('2026-11-24T12:00:00Z'),
  });
}

describe('the EC2 provider over the query protocol', () => {
  it('should send documented request shapes, follow pages, fall through capacity errors and move an address', async () => {
    endpoint
      .on('DescribeInstanceTypes', () => ec2Response('DescribeInstanceTypes', `<instanceTypeSet>${instanceTypeItem('r5.large', 2, 16384)}</instanceTypeSet><nextToken>page-2</nextToken>`))
      .on('DescribeInstanceTypes', () => ec2Response('DescribeInstanceTypes', `<instanceTypeSet>${instanceTypeItem('r5.xlarge', 4, 32768)}</instanceTypeSet>`))
      .on('DescribeSpotPriceHistory', () =>
        ec2Response('DescribeSpotPriceHistory', `<spotPriceHistorySet>${priceItem('r5.large', 'us-east-1a', '0.041200', '2026-11-24T11:50:13.000Z')}${priceItem('r5.xlarge', 'us-east-1a', '0.083100', '2026-11-24T11:40:00.000Z')}</spotPriceHistorySet><nextToken></nextToken>`),
      )
      .on(
        'CreateFleet',
        () =>
          ec2Response(
            'CreateFleet',
            `<fleetId>fleet-0a1</fleetId><errorSet><item><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient r5.large capacity in the Availability Zone you requested (us-east-1a).</errorMessage><lifecycle>spot</lifecycle><launchTemplateAndOverrides><overrides><instanceType>r5.large</instanceType></overrides></launchTemplateAndOverrides></item></errorSet><fleetInstanceSet/>`,
          ),
        () => ec2Error(503, 'RequestLimitExceeded', 'Request limit exceeded.'),
        () => ec2Response('CreateFleet', `<fleetId>fleet-0a2</fleetId><errorSet/><fleetInstanceSet><item><instanceIds><item>i-0feed</item></instanceIds><instanceType>r5.xlarge</instanceType><lifecycle>spot</lifecycle></item></fleetInstanceSet>`),
      )
      .on('DescribeInstances', () => ec2Response('DescribeInstances', instanceXml('i-0feed', 'pending', '10.0.1.9')), () => ec2Response('DescribeInstances', instanceXml('i-0feed', 'running', '10.0.1.9')))
      .on('AssignPrivateIpAddresses', () =>
        ec2Response('AssignPrivateIpAddresses', `<return>true</return><networkInterfaceId>eni-00feed</networkInterfaceId><assignedPrivateIpAddressesSet><item><privateIpAddress>10.0.1.77</privateIpAddress></item></assignedPrivateIpAddressesSet>`),
      );

    const p = provider();
    const catalog = await p.catalog();
    expect(catalog.map((c) => [c.name, c.memoryBytes / 2 ** 30, c.networkGbps, c.spotPriceByZone['us-east-1a']])).toEqual([
      // The card's peak (10), not its 0.75 baseline: what an agent on the type registers.
      ['r5.large', 16, 10, 0.0412],
      ['r5.xlarge', 32, 10, 0.0831],
    ]);
    const types = endpoint.calls('DescribeInstanceTypes');
    expect(types[0]).toMatchObject({ Action: 'DescribeInstanceTypes', Version: '2016-11-15', 'InstanceType.1': 'r5.large', 'InstanceType.2': 'r5.xlarge' });
    expect(types[1]).toMatchObject({ NextToken: 'page-2' });
    expect(endpoint.calls('DescribeSpotPriceHistory')[0]).toMatchObject({
      'InstanceType.1': 'r5.large',
      'ProductDescription.1': 'Linux/UNIX',
      'Filter.1.Name': 'availability-zone',
      'Filter.1.Value.1': 'us-east-1a',
      StartTime: '2026-11-24T12:00:00Z',
    });
    expect(endpoint.requests[0]!.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/us-east-1\/ec2\/aws4_request/);

    const r = await p.launchFitting({ memoryBytes: 8 * 2 ** 30, cpus: 2, lifecycle: 'spot' });
    expect(r.host).toMatchObject({ name: 'i-0feed', address: '10.0.1.9', lifecycle: 'spot' });
    expect(r.attempts).toHaveLength(1);
    expect(r.attempts[0]!.error).toMatch(/InsufficientInstanceCapacity: We currently do not have sufficient r5.large capacity/);
    const fleets = endpoint.calls('CreateFleet');
    expect(fleets).toHaveLength(3);
    expect(fleets[0]).toMatchObject({
      Type: 'instant',
      'LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName': 'hubshift-agent',
      'LaunchTemplateConfigs.1.LaunchTemplateSpecification.Version': '3',
      'LaunchTemplateConfigs.1.Overrides.1.InstanceType': 'r5.large',
      'LaunchTemplateConfigs.1.Overrides.1.SubnetId': 'subnet-0aaa',
      'TargetCapacitySpecification.TotalTargetCapacity': '1',
      'TargetCapacitySpecification.DefaultTargetCapacityType': 'spot',
      'SpotOptions.AllocationStrategy': 'price-capacity-optimized',
      'TagSpecification.1.ResourceType': 'instance',
      'TagSpecification.1.Tag.1.Key': 'hubshift:cluster',
      'TagSpecification.1.Tag.1.Value': 'qp',
    });
    // The throttled attempt was made again after a backoff, for the same candidate.
    expect(fleets[2]!['LaunchTemplateConfigs.1.Overrides.1.InstanceType']).toBe('r5.xlarge');
    expect(sleeps).toEqual([100]);
    expect(endpoint.calls('DescribeInstances')[0]).toMatchObject({ 'InstanceId.1': 'i-0feed' });

    await p.moveAddress('10.0.1.77', { name: 'i-0feed', instanceId: 'i-0feed' });
    expect(endpoint.calls('AssignPrivateIpAddresses')[0]).toMatchObject({ NetworkInterfaceId: 'eni-00feed', 'PrivateIpAddress.1': '10.0.1.77', AllowReassignment: 'true' });
  });

  it('should turn EC2 error documents into typed errors: capacity (HTTP 500) moves on, UnauthorizedOperation stops', async () => {
    endpoint
      .replace('DescribeInstanceTypes', () => ec2Response('DescribeInstanceTypes', `<instanceTypeSet>${instanceTypeItem('r5.large', 2, 16384)}${instanceTypeItem('r5.xlarge', 4, 32768)}</instanceTypeSet>`))
      .on('RunInstances', () => ec2Error(500, 'InsufficientInstanceCapacity', 'Insufficient capacity.'), () =>
        ec2Error(403, 'UnauthorizedOperation', 'You are not authorized to perform this operation. Encoded authorization failure message: AbC'),
      );
    const err = await provider({ launchMode: 'run-instances' })
      .launchFitting({ memoryBytes: 2 ** 30, cpus: 1, lifecycle: 'spot' })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'cloud_denied', awsCode: 'UnauthorizedOperation' });
    const runs = endpoint.calls('RunInstances');
    expect(runs).toHaveLength(2);
    expect(runs[0]).toMatchObject({ 'LaunchTemplate.LaunchTemplateName': 'hubshift-agent', InstanceType: 'r5.large', MinCount: '1', MaxCount: '1', SubnetId: 'subnet-0aaa', 'InstanceMarketOptions.MarketType': 'spot' });
  });
});
