import { DescribeInstanceTypesCommand, EC2Client, EC2ServiceException } from '@aws-sdk/client-ec2';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { mockClient } from 'aws-sdk-client-mock';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { networkGbpsOption, resolveNetworkGbps } from '../../src/cli/network-link.js';
import { defaultMovesAtOnce } from '../../src/core/moves-at-once.js';

// `hubshift agent --network-gbps auto`: EC2's figure for the node's type, and what the agent does without it.

const ec2Mock = mockClient(EC2Client);
const lines: Record<string, unknown>[] = [];
const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });

/** DescribeInstanceTypes' answer for one type, the fields as the SDK gives them (EC2 API reference). */
function described(type: string, vcpus: number, performance: string, baselineGbps: number, peakGbps = baselineGbps) {
  return {
    InstanceTypes: [
      {
        InstanceType: type,
        VCpuInfo: { DefaultVCpus: vcpus },
        MemoryInfo: { SizeInMiB: vcpus * 4096 },
        NetworkInfo: { NetworkPerformance: performance, NetworkCards: [{ NetworkCardIndex: 0, BaselineBandwidthInGbps: baselineGbps, PeakBandwidthInGbps: peakGbps }] },
        ProcessorInfo: { SupportedArchitectures: ['x86_64'] },
        SupportedUsageClasses: ['on-demand', 'spot'],
      },
    ],
  } as never;
}

describe('the link an agent sizes itself from', () => {
  beforeEach(() => {
    ec2Mock.reset();
    lines.length = 0;
  });
  afterEach(() => ec2Mock.reset());

  it("should read the node's type's sustained link from EC2, so a 50 Gbit/s node of 32 cores sends six sessions off at once", async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).resolves(described('c6in.8xlarge', 32, '50 Gigabit', 50));
    const gbps = await resolveNetworkGbps('auto', 'c6in.8xlarge', log);
    expect(gbps).toBe(50);
    expect(ec2Mock.commandCalls(DescribeInstanceTypesCommand).map((c) => c.args[0].input.InstanceTypes)).toEqual([['c6in.8xlarge']]);
    expect(defaultMovesAtOnce({ cores: 32, networkGbps: gbps })).toBe(6);
  });

  it("should take an 'Up to' type's peak, which its network credits give a burst such as an evacuation, and the headline where EC2 gives no card", async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).resolves(described('m7i.large', 2, 'Up to 12.5 Gigabit', 0.781, 12.5));
    expect(await resolveNetworkGbps('auto', 'm7i.large', log)).toBe(12.5);
    const headlineOnly = described('t3.micro', 2, 'Up to 5 Gigabit', 0) as { InstanceTypes: { NetworkInfo: object }[] };
    headlineOnly.InstanceTypes[0]!.NetworkInfo = { NetworkPerformance: 'Up to 5 Gigabit' };
    ec2Mock.on(DescribeInstanceTypesCommand).resolves(headlineOnly as never);
    expect(await resolveNetworkGbps('auto', 't3.micro', log)).toBe(5);
  });

  it('should start on the assumed 10 Gbit/s, saying what to grant, when the instance role may not describe types', async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).rejects(new EC2ServiceException({ name: 'UnauthorizedOperation', $fault: 'client', $metadata: { httpStatusCode: 403 }, message: 'You are not authorized to perform this operation.' }));
    expect(await resolveNetworkGbps('auto', 'c6in.8xlarge', log)).toBe(10);
    const warned = lines.find((l) => l.level === 40);
    expect(String(warned?.msg)).toMatch(/could not read c6in\.8xlarge's link from EC2 .*assuming 10 Gbit\/s; give --network-gbps, or let the instance role call ec2:DescribeInstanceTypes/);
  });

  it('should take a type EC2 does not describe as unknown, not as a slow link', async () => {
    ec2Mock.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: [] });
    expect(await resolveNetworkGbps('auto', 'x9.huge', log)).toBe(10);
    expect(String(lines.find((l) => l.level === 40)?.msg)).toMatch(/EC2 does not describe x9\.huge in this region: check the node's --node-type/);
  });

  it('should give up on an EC2 endpoint that never answers, and start on the assumed figure', async () => {
    // The real client this time: a private subnet with no route to EC2 would hold the agent's start for minutes.
    ec2Mock.restore();
    const silent = createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const env = { AWS_ENDPOINT_URL_EC2: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      const t0 = Date.now();
      expect(await resolveNetworkGbps('auto', 'm7i.large', log, { connectMs: 500, answerMs: 500 })).toBe(10);
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(String(lines.find((l) => l.level === 40)?.msg)).toMatch(/could not read m7i\.large's link from EC2 .*requestTimeout/);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
      silent.close();
    }
  });

  it('should take a given figure as it is, ask EC2 nothing, and refuse auto without a type and a link of zero', async () => {
    expect(await resolveNetworkGbps(25, undefined, log)).toBe(25);
    expect(ec2Mock.calls()).toHaveLength(0);
    await expect(resolveNetworkGbps('auto', undefined, log)).rejects.toThrow(/give --node-type/);
    expect(networkGbpsOption('auto')).toBe('auto');
    expect(networkGbpsOption('12.5')).toBe(12.5);
    expect(() => networkGbpsOption('0')).toThrow(/--network-gbps 0 is not a positive number/);
  });
});
