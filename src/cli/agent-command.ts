import { availableParallelism, cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { pino } from 'pino';
import { AGENT_DEFAULTS, agentConfig } from '../agent/config.js';
import { InputError } from '../core/errors.js';
import type { CriuLogLevel } from '../criu/driver.js';
import { parseSubnet } from '../agent/network.js';
import { integer, nonNegative, port, stopOnSignal } from './args.js';
import { readOrCreateTokenFile, readTokenFile } from './token-file.js';
import { missingAgentNodeOptions } from '../agent/node-options.js';
import { type NetworkGbpsOption, networkGbpsOption, resolveNetworkGbps } from './network-link.js';
import { CORES_PER_MOVE, GBPS_PER_MOVE, MAX_MOVES_AT_ONCE, defaultMovesAtOnce } from '../core/moves-at-once.js';

/**
 * What the node registers as its moves at once: the operator's figure, else
 * one from its cores and link (moves-at-once.ts). A move's work runs on this
 * machine's real cores, so fewer of them than `--cpus` declares (local test
 * hosts share one machine) bound it too.
 */
function movesAtOnceFor(given: unknown, declaredCpus: unknown, networkGbps: number): number {
  if (given !== undefined) return Number(given);
  const cores = Math.min(declaredCpus ? Number(declaredCpus) : Infinity, availableParallelism());
  return defaultMovesAtOnce({ cores, networkGbps });
}

const CRIU_LOG_LEVELS: readonly CriuLogLevel[] = [0, 1, 2, 3, 4];

function criuLogLevelOf(value: string): CriuLogLevel {
  const level = CRIU_LOG_LEVELS.find((l) => String(l) === value);
  if (level === undefined) throw new InputError(`--criu-log-level must be one of ${CRIU_LOG_LEVELS.join(', ')}, not ${value}`);
  return level;
}

function parseCommand(value: string): string[] {
  const trimmed = value.trim();
  if (trimmed.startsWith('[')) {
    const parsed: unknown = JSON.parse(trimmed);
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string')) {
      throw new InputError('--session-command as JSON must be a non-empty array of strings');
    }
    return parsed as string[];
  }
  return trimmed.split(/\s+/).filter(Boolean);
}

function addressPool(value: string): { first: number; last: number } {
  const m = /^(\d+)-(\d+)$/.exec(value);
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 2 || last < first) throw new InputError(`--address-pool ${value} is not FIRST-LAST with 2 <= FIRST <= LAST (e.g. 100-199)`);
  return { first, last };
}

export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description("run the node agent: starts users' Jupyter sessions in their own namespaces, checkpoints and restores them with criu")
    .requiredOption('--token-file <file>', 'bearer token for the API (created with a random token if missing)')
    .option('--port <port>', 'HTTP port (0 picks a free one)', port, AGENT_DEFAULTS.port)
    .option('--host <address>', 'address to listen on', AGENT_DEFAULTS.host)
    .option('--data-dir <dir>', 'session records, logs and home directories', '/var/lib/hubshift/agent')
    .option('--store <url>', 'checkpoint store: a directory or s3://bucket/prefix (default DATA_DIR/store)')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint for the store (MinIO, tests); unset for AWS')
    .option('--s3-kms-key <key>', 'encrypt S3 objects with SSE-KMS under this key: id, ARN, alias/NAME, or aws/s3 for the AWS-managed key')
    .option('--network-gbps <gbps|auto>', "the node's network bandwidth: sizes S3's parallel part transfers and the default --moves-at-once; auto asks EC2 for --node-type's (DescribeInstanceTypes, AWS_REGION), and assumes 10 if it cannot", networkGbpsOption, AGENT_DEFAULTS.networkGbps)
    .option('--keep-checkpoints <n>', 'checkpoints kept per session; older ones are deleted after each new one, except one this agent is restoring from (0 keeps all)', integer('--keep-checkpoints', 0), AGENT_DEFAULTS.keepCheckpoints)
    .option('--log-days <n>', "days criu's logs (DATA_DIR/logs) are kept; older ones are removed at start and hourly (0 keeps all)", integer('--log-days', 0), AGENT_DEFAULTS.logDays)
    .option('--work-dir <dir>', 'where criu writes images before storing (default DATA_DIR/work)')
    .option('--bridge <name>', 'bridge the sessions attach to', AGENT_DEFAULTS.bridge.name)
    .option('--subnet <cidr>', "sessions' addresses; the bridge takes the first", AGENT_DEFAULTS.bridge.subnet)
    .option('--session-command <cmd>', 'session server command, words or a JSON array; {port} and {home} are filled in', AGENT_DEFAULTS.sessionCommand.join(' '))
    .option('--hub-session-command <cmd>', "the same for sessions JupyterHub starts (their environment has the hub's token)", AGENT_DEFAULTS.hubSessionCommand.join(' '))
    .option('--session-port <port>', 'port the session server listens on in its namespace', port, AGENT_DEFAULTS.sessionPort)
    .addOption(new Option('--compression <kind>', 'compress images in the store').choices(['none', 'zstd']).default(AGENT_DEFAULTS.compression))
    .option('--no-lazy-restore', 'copy all memory in before a restored session runs (default: lazily, where the kernel has userfaultfd)')
    .option('--criu-action-script <file>', 'an extra CRIU action script run at every stage')
    .option('--bridge-address <cidr>', "the bridge's own address (default: the subnet's first, the sessions' gateway)")
    .option('--uplink <interface>', 'an interface to enslave to the bridge (a test host\'s link to the shared segment)')
    .option('--address-pool <first-last>', 'host numbers of the subnet this agent gives out, e.g. 100-199 (agents sharing a bridge take disjoint pools)', addressPool)
    .option('--node <name>', 'register with the scheduler as this node (with --scheduler)')
    .option('--scheduler <url>', 'register with this scheduler and push metrics to it')
    .option('--scheduler-token-file <file>', "file holding the scheduler's bearer token")
    .option('--node-type <type>', 'instance type the node is', 'local')
    .addOption(new Option('--lifecycle <kind>', 'spot or on-demand').choices(['spot', 'on-demand']).default('on-demand'))
    .option('--price <usd-per-hour>', 'what the node costs', nonNegative('--price'), 0)
    .option('--zone <zone>', 'availability zone', 'local')
    .option('--instance-id <id>', 'the EC2 instance id EventBridge notices name (default: the node name)')
    .option('--memory <bytes>', 'memory the scheduler may place sessions into (default: all of this machine)', nonNegative('--memory'))
    .option('--cpus <n>', 'cores (default: all of this machine)', nonNegative('--cpus'))
    .option(
      '--moves-at-once <n>',
      `sessions the scheduler sends off this node at once (moves and checkpoints; the spot-eviction planner times them so) (default: one for each ${CORES_PER_MOVE} of its cores, --cpus or this machine's if fewer, and each ${GBPS_PER_MOVE} Gbit/s of --network-gbps, the fewer, at least 1)`,
      (v: string) => {
        const n = integer('--moves-at-once', 1)(v);
        if (n > MAX_MOVES_AT_ONCE) throw new InputError(`--moves-at-once ${n} is more than ${MAX_MOVES_AT_ONCE}`);
        return n;
      },
    )
    .option('--push-interval <seconds>', 'push metrics this often', nonNegative('--push-interval'), 5)
    .option('--advertise-url <url>', "the URL the scheduler's workers reach this agent at (default: the one it listens on)")
    .option('--incoming-timeout <seconds>', 'a session moved in runs only once its source commits; without a commit in this time its copy is killed', nonNegative('--incoming-timeout'), AGENT_DEFAULTS.incomingTimeoutMs / 1000)
    .option('--move-idle-timeout <seconds>', 'give up a move whose connection stalls this long (a cut link); for post-copy, also a transfer after the commit that brings no page for this long', nonNegative('--move-idle-timeout'), AGENT_DEFAULTS.moveIdleTimeoutMs / 1000)
    .option('--landing-memory <MiB>', "memory warmed before each restore and move in and freed just before criu restore, so that the fill of the session server's memory lands on memory the host still backs (a VM that hands free memory back to its host); about a server's size; skipped where less than 8 times it is available; 0: off", nonNegative('--landing-memory'), AGENT_DEFAULTS.landingBytes / (1 << 20))
    .option('--post-copy-eager <MiB>', "post-copy: at most this much of the kernels' memory goes with the images instead of being fetched page by page on first touch: the pages they asked for first after their last lazy restore or move, else their smallest mappings (the server's memory always goes)", nonNegative('--post-copy-eager'), AGENT_DEFAULTS.postCopyEagerBytes / (1 << 20))
    .option('--no-spawn-helper', "start commands (criu restore, ip, nft, ...) by forking the agent itself, instead of from a small helper process (a fork of the agent costs it more the more memory it holds)")
    .option('--no-resident-tools', "leave criu, the commands run beside it and the restore's hasher to the page cache, instead of holding them in memory (about 17 MB, locked) while the agent runs: read from disk, criu took 16-25 ms instead of 11-17 to start inside a checkpoint")
    .option('--no-waiting-criu', "start criu for each dump, restore and lazy-pages daemon, instead of keeping two started ahead, waiting for their arguments (hubshift's build of criu only)")
    .option('--no-post-copy-precopy', "post-copy: send all the eager memory after the freeze, instead of copying it while the session runs and sending after the freeze only the pages that changed")
    .option('--no-session-huge-pages', "start sessions without GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (their large allocations in transparent huge pages, which criu dumps faster), and leave a lazily restored session's memory in 4 KiB pages instead of collapsing it back into huge pages")
    .option('--conntrack-buckets <n>', "shrink the host's connection-tracking table to this many buckets at start when it is larger and nearly unused: criu walks the whole table twice in every dump (0: leave it alone)", integer('--conntrack-buckets', 0), AGENT_DEFAULTS.conntrackBuckets)
    .addOption(
      new Option('--file-validation <how>', "how criu checks that a restore maps the files the dump saw: filesize (size and mode) or buildid (also each library's build-id: a disk read per library at every dump and restore)")
        .choices(['filesize', 'buildid'])
        .default(AGENT_DEFAULTS.fileValidation),
    )
    .addOption(
      new Option('--criu-log-level <n>', "how much criu logs of each dump and restore into DATA_DIR/logs: 0 nothing, 1 errors, 2 also warnings, 3 also its steps, 4 every memory area and socket (20-45 ms more of a 1 GiB session's dump and of its restore)")
        .choices(CRIU_LOG_LEVELS.map(String))
        .default(String(AGENT_DEFAULTS.criuLogLevel)),
    )
    .option('--metadata-endpoint <url>', 'watch this instance metadata service (IMDSv2) for spot and rebalance notices and pass them to the scheduler; on EC2: http://169.254.169.254')
    .option('--metadata-interval <seconds>', 'ask the metadata service this often', nonNegative('--metadata-interval'), 5)
    .option('--stop-timeout <seconds>', "on SIGTERM or SIGINT, refuse new operations and let those under way end and answer for up to this long before stopping (0: stop at once; a second signal stops at once too). What is cut is settled by the next agent here: its sessions resume or stay checkpointed", nonNegative('--stop-timeout'), 60)
    .option('--log-level <level>', 'pino log level', 'info')
    .action(async (o: Record<string, string | number | boolean | undefined | { first: number; last: number }>, cmd: Command) => {
      const log = pino({ name: 'hubshift-agent', level: String(o.logLevel) });
      const dataDir = resolve(String(o.dataDir));
      const subnet = String(o.subnet);
      parseSubnet(subnet);
      const token = await readOrCreateTokenFile(String(o.tokenFile));
      if (Boolean(o.scheduler) !== Boolean(o.node) || Boolean(o.scheduler) !== Boolean(o.schedulerTokenFile)) {
        throw new InputError('--scheduler, --node and --scheduler-token-file go together');
      }
      const networkGbps = await resolveNetworkGbps(o.networkGbps as NetworkGbpsOption, cmd.getOptionValueSource('nodeType') === 'default' ? undefined : String(o.nodeType), log);
      const scheduler = o.scheduler
        ? {
            url: String(o.scheduler),
            token: await readTokenFile(String(o.schedulerTokenFile)),
            pushIntervalMs: Number(o.pushInterval) * 1000,
            advertiseUrl: o.advertiseUrl ? String(o.advertiseUrl) : undefined,
            metadata: o.metadataEndpoint ? { endpoint: String(o.metadataEndpoint), intervalMs: Number(o.metadataInterval) * 1000 } : undefined,
            node: {
              name: String(o.node),
              instanceId: o.instanceId ? String(o.instanceId) : String(o.node),
              instanceType: String(o.nodeType),
              zone: String(o.zone),
              lifecycle: o.lifecycle === 'spot' ? ('spot' as const) : ('on-demand' as const),
              pricePerHour: Number(o.price),
              memoryBytes: o.memory ? Math.round(Number(o.memory)) : totalmem(),
              cpus: o.cpus ? Number(o.cpus) : cpus().length,
              movesAtOnce: movesAtOnceFor(o.movesAtOnce, o.cpus, networkGbps),
              networkGbps,
            },
          }
        : undefined;
      const config = agentConfig({
        host: String(o.host),
        port: Number(o.port),
        dataDir,
        token,
        storeUrl: o.store ? String(o.store) : undefined,
        s3Endpoint: o.s3Endpoint ? String(o.s3Endpoint) : undefined,
        s3KmsKey: o.s3KmsKey ? String(o.s3KmsKey) : undefined,
        networkGbps,
        keepCheckpoints: Math.floor(Number(o.keepCheckpoints)),
        logDays: Math.floor(Number(o.logDays)),
        workDir: o.workDir ? resolve(String(o.workDir)) : undefined,
        bridge: {
          name: String(o.bridge),
          subnet,
          pool: o.addressPool as { first: number; last: number } | undefined,
          address: o.bridgeAddress ? String(o.bridgeAddress) : undefined,
          uplink: o.uplink ? String(o.uplink) : undefined,
        },
        sessionCommand: parseCommand(String(o.sessionCommand)),
        hubSessionCommand: parseCommand(String(o.hubSessionCommand)),
        sessionPort: Number(o.sessionPort),
        compression: o.compression === 'zstd' ? 'zstd' : 'none',
        lazyRestore: o.lazyRestore !== false,
        criuActionScript: o.criuActionScript ? resolve(String(o.criuActionScript)) : undefined,
        scheduler,
        incomingTimeoutMs: Number(o.incomingTimeout) * 1000,
        moveIdleTimeoutMs: Number(o.moveIdleTimeout) * 1000,
        postCopyEagerBytes: Math.round(Number(o.postCopyEager) * (1 << 20)),
        landingBytes: Math.round(Number(o.landingMemory) * (1 << 20)),
        postCopyPrecopy: o.postCopyPrecopy !== false,
        spawnHelper: o.spawnHelper !== false,
        residentTools: o.residentTools !== false,
        waitingCriu: o.waitingCriu !== false,
        sessionHugePages: o.sessionHugePages !== false,
        conntrackBuckets: Math.round(Number(o.conntrackBuckets)),
        fileValidation: o.fileValidation === 'buildid' ? 'buildid' : 'filesize',
        criuLogLevel: criuLogLevelOf(String(o.criuLogLevel)),
      });
      // The agent's code (criu, stores, AWS SDK) loads only for this command (see main.ts).
      const { startAgent } = await import('../agent/agent.js');
      const missing = missingAgentNodeOptions();
      if (missing.length > 0) log.warn({ missing }, `node runs this agent without ${missing.join(' ')}: V8 will collect its heap inside moves' frozen windows (60-100 ms more downtime a post-copy move here); run it as node ${missing.join(' ')} bin/hubshift.js agent ..., as the systemd unit does`);
      const agent = await startAgent(config, log);
      process.stderr.write(`hubshift agent listening on ${agent.url}\n`);
      const stopTimeoutMs = Number(o.stopTimeout) * 1000;
      stopOnSignal(() => agent.drain(stopTimeoutMs));
    });
}
