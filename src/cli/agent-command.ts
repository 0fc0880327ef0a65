import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { pino } from 'pino';
import { startAgent } from '../agent/agent.js';
import { AGENT_DEFAULTS, agentConfig } from '../agent/config.js';
import { InputError } from '../core/errors.js';
import { parseSubnet } from '../agent/network.js';
import { readOrCreateTokenFile } from './token-file.js';

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

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InputError(`port ${value} is not a number from 0 to 65535`);
  return n;
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
    .option('--work-dir <dir>', 'where criu writes images before storing (default DATA_DIR/work)')
    .option('--bridge <name>', 'bridge the sessions attach to', AGENT_DEFAULTS.bridge.name)
    .option('--subnet <cidr>', "sessions' addresses; the bridge takes the first", AGENT_DEFAULTS.bridge.subnet)
    .option('--session-command <cmd>', 'session server command, words or a JSON array; {port} and {home} are filled in', AGENT_DEFAULTS.sessionCommand.join(' '))
    .option('--session-port <port>', 'port the session server listens on in its namespace', port, AGENT_DEFAULTS.sessionPort)
    .addOption(new Option('--compression <kind>', 'compress images in the store').choices(['none', 'zstd']).default(AGENT_DEFAULTS.compression))
    .option('--no-lazy-restore', 'copy all memory in before a restored session runs (default: lazily, where the kernel has userfaultfd)')
    .option('--criu-action-script <file>', 'an extra CRIU action script run at every stage')
    .option('--log-level <level>', 'pino log level', 'info')
    .action(async (o: Record<string, string | number | boolean | undefined>) => {
      const dataDir = resolve(String(o.dataDir));
      const subnet = String(o.subnet);
      parseSubnet(subnet);
      const config = agentConfig({
        host: String(o.host),
        port: Number(o.port),
        dataDir,
        token: await readOrCreateTokenFile(String(o.tokenFile)),
        storeUrl: o.store ? String(o.store) : undefined,
        s3Endpoint: o.s3Endpoint ? String(o.s3Endpoint) : undefined,
        workDir: o.workDir ? resolve(String(o.workDir)) : undefined,
        bridge: { name: String(o.bridge), subnet },
        sessionCommand: parseCommand(String(o.sessionCommand)),
        sessionPort: Number(o.sessionPort),
        compression: o.compression === 'zstd' ? 'zstd' : 'none',
        lazyRestore: o.lazyRestore !== false,
        criuActionScript: o.criuActionScript ? resolve(String(o.criuActionScript)) : undefined,
      });
      const agent = await startAgent(config, pino({ name: 'hubshift-agent', level: String(o.logLevel) }));
      process.stderr.write(`hubshift agent listening on ${agent.url}\n`);
      const stop = (): void => {
        void agent.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
