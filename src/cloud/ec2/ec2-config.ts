import { z } from 'zod';
import { AwsRegion } from '../../core/cloud.js';
import { loadYamlAs } from '../../util/yaml-file.js';

/** The EC2 provider's settings: `hubshift scheduler --ec2-config FILE` (YAML), written by infra/terraform's outputs. */
export const Ec2Config = z
  .object({
    region: AwsRegion,
    /** Tags every instance hubshift launches (hubshift:cluster): hosts() finds them by it. */
    cluster: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/),
    /** The launch template whose user data starts the agent (infra/terraform/launch-template.tf). */
    launchTemplate: z.object({ name: z.string().min(1), version: z.string().default('$Latest') }),
    /** Subnet per availability zone: where nodes may launch. */
    subnets: z.record(z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d[a-z]$/, 'is not an availability zone'), z.string().regex(/^subnet-[0-9a-f]+$/, 'is not a subnet id')),
    /** The types hubshift may launch; each needs a price in the price table. */
    instanceTypes: z.array(z.string()).min(1),
    /** Path of the on-demand price table (default: the one shipped in infra/prices). */
    priceTable: z.string().optional(),
    /** CreateFleet (instant) or RunInstances, one candidate at a time either way. */
    launchMode: z.enum(['fleet', 'run-instances']).default('fleet'),
    /** Where agents listen and where their token lives on each node. */
    agentPort: z.number().int().min(1).max(65535).default(7400),
    agentTokenFile: z.string().default('/etc/hubshift/agent.token'),
    dataDir: z.string().default('/var/lib/hubshift'),
  })
  .strict();
export type Ec2Config = z.infer<typeof Ec2Config>;

export async function loadEc2Config(path: string): Promise<Ec2Config> {
  return loadYamlAs(path, Ec2Config, 'EC2 config');
}
