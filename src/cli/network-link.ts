import type { Logger } from 'pino';
import { EC2_LOOKUP_LIMITS, type Ec2CallLimits } from '../cloud/ec2/ec2-call-limits.js';
import { InputError } from '../core/errors.js';
import { ASSUMED_NETWORK_GBPS } from '../core/moves-at-once.js';
import { positiveNumber } from './args.js';

/** `--network-gbps`: Gbit/s, or `auto` (EC2's figure for the node's type). */
export type NetworkGbpsOption = number | 'auto';

export function networkGbpsOption(value: string): NetworkGbpsOption {
  return value === 'auto' ? 'auto' : positiveNumber('--network-gbps')(value);
}

/**
 * The node's link in Gbit/s. `auto` asks EC2 (DescribeInstanceTypes, with the
 * instance role's credentials and AWS_REGION; the instance metadata service
 * names the type but not its bandwidth). An agent that cannot learn it still
 * starts, on the assumed figure, and says so: a node that will not start
 * cannot be evacuated either.
 */
export async function resolveNetworkGbps(given: NetworkGbpsOption, nodeType: string | undefined, log: Logger, limits: Ec2CallLimits = EC2_LOOKUP_LIMITS): Promise<number> {
  if (given !== 'auto') return given;
  if (!nodeType) throw new InputError('--network-gbps auto reads the link of the node\'s instance type from EC2: give --node-type (on EC2, the instance metadata\'s instance-type)');
  // The EC2 client loads only where it is asked for (main.ts keeps commands' start-up light).
  const [{ ec2ClientFor }, { describeNetworkGbps }] = await Promise.all([import('../cloud/ec2/ec2-client.js'), import('../cloud/ec2/ec2-catalog.js')]);
  // Tighter than a worker's calls: where nothing routes to EC2 (a private subnet without its endpoint) the agent
  // would otherwise wait that long to start.
  const ec2 = ec2ClientFor(undefined, limits);
  try {
    const gbps = await describeNetworkGbps(ec2, nodeType, { attempts: 3 });
    log.info({ nodeType, networkGbps: gbps }, `link ${gbps} Gbit/s, EC2's figure for ${nodeType}`);
    return gbps;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    log.warn({ nodeType, err: why }, `could not read ${nodeType}'s link from EC2 (${why}): assuming ${ASSUMED_NETWORK_GBPS} Gbit/s; give --network-gbps, or let the instance role call ec2:DescribeInstanceTypes with AWS_REGION set`);
    return ASSUMED_NETWORK_GBPS;
  } finally {
    ec2.destroy();
  }
}
