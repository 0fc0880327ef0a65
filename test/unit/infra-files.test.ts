import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '@cdktf/hcl2json';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { Ec2Config } from '../../src/cloud/ec2/ec2-config.js';
import { AGENT_NODE_OPTIONS } from '../../src/agent/node-options.js';

const INFRA = join(import.meta.dirname, '../../infra');
const TF = join(INFRA, 'terraform');

type Blocks = Record<string, Record<string, unknown>>;

/** Every .tf file parsed: HCL syntax errors fail here with the file and line. */
async function terraform(): Promise<{ files: Record<string, Blocks>; text: string }> {
  const files: Record<string, Blocks> = {};
  let text = '';
  for (const f of readdirSync(TF).filter((n) => n.endsWith('.tf'))) {
    const src = readFileSync(join(TF, f), 'utf8');
    files[f] = (await parse(f, src)) as Blocks;
    text += `${src}\n`;
  }
  return { files, text };
}

function hasTerraform(): boolean {
  try {
    execFileSync('terraform', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('infra/', () => {
  it('should be valid Terraform: parsed HCL whose every reference resolves, terraform fmt where terraform is installed, validate where its AWS provider can be had', async () => {
    if (hasTerraform()) {
      // Syntax and canonical format, offline.
      execFileSync('terraform', ['fmt', '-check', '-diff'], { cwd: TF, stdio: 'pipe' });
      // validate needs the AWS provider, which this machine's registries do not carry: run it where init can fetch it.
      const data = mkdtempSync(join(tmpdir(), 'hubshift-tf-'));
      try {
        const env = { ...process.env, TF_DATA_DIR: data, TF_IN_AUTOMATION: '1' };
        let initialized = true;
        try {
          execFileSync('terraform', ['init', '-backend=false', '-input=false', '-lockfile=readonly'], { cwd: TF, stdio: 'pipe', env, timeout: 60_000 });
        } catch {
          initialized = false;
        }
        if (initialized) execFileSync('terraform', ['validate'], { cwd: TF, stdio: 'pipe', env });
      } finally {
        rmSync(data, { recursive: true, force: true });
      }
    }
    const { files, text } = await terraform();
    expect(Object.keys(files).sort()).toEqual(['eventbridge.tf', 'iam.tf', 'launch-template.tf', 'outputs.tf', 's3.tf', 'variables.tf', 'versions.tf']);
    const declared = new Set<string>();
    const variables = new Set<string>();
    for (const blocks of Object.values(files)) {
      for (const [type, byName] of Object.entries(blocks.resource ?? {})) for (const name of Object.keys(byName as object)) declared.add(`${type}.${name}`);
      for (const [type, byName] of Object.entries(blocks.data ?? {})) for (const name of Object.keys(byName as object)) declared.add(`data.${type}.${name}`);
      for (const name of Object.keys(blocks.variable ?? {})) variables.add(name);
    }
    const used = new Set([...text.matchAll(/\bvar\.([a-z_]+)/g)].map((m) => m[1]!));
    expect([...used].filter((v) => !variables.has(v))).toEqual([]);
    expect([...variables].filter((v) => !used.has(v))).toEqual([]);
    const refs = new Set([...text.matchAll(/\b((?:data\.)?aws_[a-z0-9_]+\.[a-z0-9_]+)\.[a-z_]+/g)].map((m) => m[1]!));
    expect([...refs].filter((r) => !declared.has(r))).toEqual([]);
    // What the issue asks of it.
    for (const r of ['aws_s3_bucket_server_side_encryption_configuration.images', 'aws_s3_bucket_lifecycle_configuration.images', 'aws_iam_role.agent', 'aws_iam_role.scheduler', 'aws_cloudwatch_event_rule.interruptions', 'aws_cloudwatch_event_rule.rebalance', 'aws_cloudwatch_event_api_destination.notices', 'aws_launch_template.agent']) {
      expect(declared.has(r), r).toBe(true);
    }
    expect(text).toMatch(/"EC2 Spot Instance Interruption Warning"/);
    expect(text).toMatch(/"EC2 Instance Rebalance Recommendation"/);
    expect(text).toMatch(/http_tokens\s+=\s+"required"/);
    expect(existsSync(join(TF, 'user-data.sh.tftpl'))).toBe(true);
  });

  it('should render an EC2 config the scheduler accepts', () => {
    // outputs.tf's ec2_config with example values, as yamlencode would write it.
    const example = { region: 'us-east-1', cluster: 'science', launchTemplate: { name: 'hubshift-science-agent-1', version: '$Latest' }, subnets: { 'us-east-1a': 'subnet-0aaa1111bbbb22223' }, instanceTypes: ['r5.large'], launchMode: 'fleet', agentPort: 7400, agentTokenFile: '/etc/hubshift/agent.token', dataDir: '/var/lib/hubshift/agent' };
    const tf = readFileSync(join(TF, 'outputs.tf'), 'utf8');
    for (const k of Object.keys(example)) expect(tf).toContain(`${k} `);
    expect(Ec2Config.parse(example).launchMode).toBe('fleet');
  });

  it('should ship systemd units that run the commands this CLI has', () => {
    const help = execFileSync(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'agent', '--help'], { encoding: 'utf8' });
    const schedulerHelp = execFileSync(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'scheduler', '--help'], { encoding: 'utf8' });
    for (const [unit, usage] of [
      ['hubshift-agent.service', help],
      ['hubshift-scheduler.service', schedulerHelp],
    ] as const) {
      const text = readFileSync(join(INFRA, 'systemd', unit), 'utf8');
      expect(text).toMatch(/^\[Unit\]$/m);
      expect(text).toMatch(/^\[Service\]$/m);
      expect(text).toMatch(/^\[Install\]$/m);
      const [node, command] = /^ExecStart=(.+?) \/opt\/hubshift\/bin\/hubshift\.js (.+)$/m.exec(text)!.slice(1) as [string, string];
      for (const flag of command.match(/--[a-z-]+/g) ?? []) expect(usage, `${unit}: ${flag}`).toContain(flag);
      if (unit === 'hubshift-agent.service') expect(node.split(' ').slice(1)).toEqual([...AGENT_NODE_OPTIONS]);
    }
    const userData = readFileSync(join(TF, 'user-data.sh.tftpl'), 'utf8');
    for (const flag of userData.match(/ --[a-z][a-z0-9-]+/g) ?? []) if (!['--depth', '--branch', '--now'].includes(flag.trim())) expect(help, `user data: ${flag}`).toContain(flag.trim());
    // The SDK reads no region off the instance (S3 and EC2 would be asked in us-east-1), and the link comes from EC2.
    expect(userData).toMatch(/^AWS_REGION=\$\(imds placement\/region\)$/m);
    expect(userData).toMatch(/ --network-gbps auto\b/);
    expect(readFileSync(join(TF, 'iam.tf'), 'utf8')).toMatch(/sid\s+= "OwnInstanceType"\s+actions\s+= \["ec2:DescribeInstanceTypes"\]/);
  });

  it('should ship a Grafana dashboard over metrics the scheduler serves', () => {
    const d = JSON.parse(readFileSync(join(INFRA, 'grafana/hubshift-finops.json'), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const served = new Set([...readFileSync(join(import.meta.dirname, '../../src/api/metrics.ts'), 'utf8').matchAll(/name: '(hubshift_[a-z_]+)'/g)].map((m) => m[1]!));
    const exprs = d.panels.flatMap((p) => p.targets.map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(5);
    for (const e of exprs) for (const m of e.match(/hubshift_[a-z_]+/g) ?? []) expect(served.has(m), `${e}`).toBe(true);
    expect(parseYaml(readFileSync(join(TF, 'terraform.tfvars.example'), 'utf8').replace(/=/g, ':').replace(/^#.*$/gm, ''))).toBeTruthy();
  });
});
