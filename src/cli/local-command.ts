import { rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import type { MetadataServer } from '../cloud/metadata-server.js';
import { LOCAL_DEFAULTS } from '../cloud/local-defaults.js';
import type { LocalProvider } from '../cloud/local-provider.js';
import { InputError } from '../core/errors.js';
import { integer, nonNegative, positiveNumber, stopOnSignal } from './args.js';
import { Progress, printResult } from './output.js';

interface LocalOpts {
  stateDir: string;
  bridge: string;
  subnet: string;
  json: boolean;
}

function withLocal(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', "the hosts' data, tokens, logs and state file", LOCAL_DEFAULTS.stateDir)
    .option('--bridge <name>', 'the bridge joining the hosts', LOCAL_DEFAULTS.bridge)
    .option('--subnet <cidr>', 'the hosts\' shared segment (/16)', LOCAL_DEFAULTS.subnet)
    .option('--json', 'print one JSON object', false);
}

/** The provider's code, loaded where a command runs (main.ts keeps commands' start-up light). */
const providerCode = () => import('../cloud/local-provider.js');

async function provider(o: LocalOpts & { scheduler?: string; schedulerTokenFile?: string; pushInterval?: number; metadataInterval?: number }): Promise<LocalProvider> {
  if (Boolean(o.scheduler) !== Boolean(o.schedulerTokenFile)) throw new InputError('--scheduler and --scheduler-token-file go together');
  const { LocalProvider } = await providerCode();
  return new LocalProvider({
    stateDir: resolve(o.stateDir),
    bridge: o.bridge,
    subnet: o.subnet,
    scheduler: o.scheduler ? { url: o.scheduler, tokenFile: resolve(o.schedulerTokenFile as string) } : undefined,
    pushIntervalSeconds: o.pushInterval,
    metadataIntervalSeconds: o.metadataInterval,
  });
}

export function registerLocalCommands(program: Command): void {
  const local = program.command('local').description('test hosts on this machine: network namespaces on one bridge, each with its own agent and metadata endpoint');

  withLocal(local.command('up').description('create test hosts, each with its agent, and return when all answer; prints {"hosts":[{"name","agent","tokenFile"}]}'))
    .option('--hosts <n>', 'how many', integer('--hosts', 1), 3)
    .option('--spot <n>', 'how many of them are spot (the first ones)', integer('--spot', 0), 1)
    .option('--scheduler <url>', 'the agents register with this scheduler (it must listen where the hosts reach it: the bridge\'s address, .0.1)')
    .option('--scheduler-token-file <file>', "the scheduler's token")
    .option('--push-interval <seconds>', 'agents push metrics this often', positiveNumber('--push-interval'), 5)
    .option('--metadata-interval <seconds>', 'agents ask their metadata endpoint this often', positiveNumber('--metadata-interval'), 5)
    .action(async (o: LocalOpts & { hosts: number; spot: number; scheduler?: string; schedulerTokenFile?: string; pushInterval: number; metadataInterval: number }) => {
      const p = new Progress('local up', o.json);
      p.step(`creating ${o.hosts} hosts`);
      const { localHostSpecs } = await providerCode();
      const hosts = await (await provider(o)).create(localHostSpecs(Math.round(o.hosts), Math.round(o.spot)));
      p.step('all agents answer');
      p.done();
      printResult(o.json, { hosts: hosts.map((h) => ({ name: h.name, agent: h.agentUrl, tokenFile: h.tokenFile, instanceType: h.instanceType, lifecycle: h.lifecycle, pricePerHour: h.pricePerHour, metadata: h.metadataUrl })) }, () =>
        hosts.map((h) => `${h.name.padEnd(8)} ${h.agentUrl}  ${h.instanceType} ${h.lifecycle} $${h.pricePerHour}/h  token ${h.tokenFile}`).join('\n'),
      );
    });

  withLocal(local.command('down').description('remove the test hosts and everything they started (sessions, agents, namespaces, the bridge)')).action(async (o: LocalOpts) => {
    const pr = await provider(o);
    const n = (await pr.hosts()).length;
    await pr.removeAll();
    printResult(o.json, { removed: n }, () => (n ? `removed ${n} hosts` : 'no local hosts were up'));
  });

  withLocal(local.command('notice').description("schedule a spot interruption (or a rebalance recommendation) on a host's metadata endpoint, as EC2 would").argument('<host>', 'the host'))
    .option('--in <seconds>', 'seconds until the host goes', nonNegative('--in'), 120)
    .addOption(new Option('--action <action>', 'what happens').choices(['terminate', 'stop', 'hibernate', 'rebalance']).default('terminate'))
    .action(async (host: string, o: LocalOpts & { in: number; action: 'terminate' | 'stop' | 'hibernate' | 'rebalance' }) => {
      const r = await (await provider(o)).notice(host, o.action, o.in);
      printResult(o.json, { host, notice: r }, () => `${host}: ${JSON.stringify(r)}`);
    });

  // Run by `local up` in the background: every host's metadata endpoint, on the bridge's address.
  local
    .command('serve-metadata', { hidden: true })
    .requiredOption('--state-dir <dir>', 'the local hosts\' state directory')
    .action(async (o: { stateDir: string }) => {
      const [{ readLocalHosts, localInstanceId }, { startMetadataServer }] = await Promise.all([providerCode(), import('../cloud/metadata-server.js')]);
      const { gateway, hosts } = await readLocalHosts(o.stateDir);
      const servers: MetadataServer[] = [];
      const urls: Record<string, string> = {};
      for (const h of hosts) {
        const s = await startMetadataServer({ instanceId: localInstanceId(h.name), instanceType: h.instanceType, zone: 'local-1a' }, { host: gateway, port: 0 }, { admin: true });
        servers.push(s);
        urls[h.name] = s.url;
      }
      // Whole or not at all: local up reads it as soon as it appears.
      await writeFile(join(o.stateDir, 'metadata.json.tmp'), JSON.stringify({ pid: process.pid, urls }));
      await rename(join(o.stateDir, 'metadata.json.tmp'), join(o.stateDir, 'metadata.json'));
      stopOnSignal(async () => {
        await Promise.all(servers.map((s) => s.close()));
      });
    });
}
