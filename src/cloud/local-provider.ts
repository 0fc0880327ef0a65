import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AgentClient } from '../agent/agent-client.js';
import { ensureBridge, ip, netnsFile, netnsName, netnsPath, stagedSessions, stagingNetworkNames } from '../agent/network.js';
import { killOutgoing } from '../agent/outgoing-moves.js';
import { killStoppedCopies } from '../agent/stopped-copies.js';
import { killIncomingCopies } from '../agent/incoming-copies.js';
import { shrinkConntrackTable } from '../criu/conntrack-table.js';
import { HostRecord, type HostSpec } from '../core/cloud.js';
import { ConflictError, SandboxError } from '../core/errors.js';
import { Session } from '../core/session.js';
import { run, sleep, waitFor } from '../util/exec.js';
import { isAlive, killQuietly } from '../util/proc.js';
import type { NodeFleet, Provider } from './provider.js';
import { AGENT_NODE_OPTIONS } from '../agent/node-options.js';

const BIN = join(import.meta.dirname, '../../bin/hubshift.js');

export interface LocalProviderConfig {
  /** Where hosts keep their data, tokens and logs, and the state file lives. */
  stateDir: string;
  /** The bridge in this namespace joining the hosts: their shared segment. */
  bridge: string;
  /** The segment's subnet (/16): the bridge takes .0.1 (the sessions' gateway), host i .0.(10+i), its sessions .(1+i).x. */
  subnet: string;
  /** Where the hosts' agents register and push metrics, if anywhere. */
  scheduler?: { url: string; tokenFile: string };
  /** Agents' push and metadata polling intervals (default 5 s each). */
  pushIntervalSeconds?: number;
  metadataIntervalSeconds?: number;
  /** The agents' commit timeout for sessions moved in, and how long a move's stream may stall (default 30 s each). */
  incomingTimeoutSeconds?: number;
  moveIdleTimeoutSeconds?: number;
  /** Every agent's extra CRIU action script (tests inject failures with it). */
  criuActionScript?: string;
  logLevel?: string;
  /** How many session addresses each host's agent gives out (default 253, all of its /24). */
  addressPoolSize?: number;
  /** More options for every host's agent (`hubshift agent --help`), after the provider's own. */
  agentArgs?: string[];
}

const LocalHost = HostRecord.extend({ netns: z.string(), rootVeth: z.string() });
type LocalHost = z.infer<typeof LocalHost>;

const LocalState = z.object({
  version: z.literal(1),
  bridge: z.string(),
  subnet: z.string(),
  gateway: z.string(),
  storeDir: z.string(),
  metadataPid: z.number().int().nullable(),
  hosts: z.array(LocalHost),
});
type LocalState = z.infer<typeof LocalState>;

/** What the metadata daemon writes once it serves every host's endpoint. */
export const MetadataEndpoints = z.object({ pid: z.number().int(), urls: z.record(z.string(), z.string().url()) });

function octets(subnet: string): [number, number] {
  const m = /^(\d{1,3})\.(\d{1,3})\.0\.0\/16$/.exec(subnet);
  if (!m) throw new SandboxError(`local hosts need a /16 subnet like 10.230.0.0/16, not ${subnet}`);
  return [Number(m[1]), Number(m[2])];
}

async function stopPid(pid: number | null): Promise<void> {
  if (pid === null || !(await isAlive(pid))) return;
  killQuietly(pid, 'SIGTERM');
  for (let i = 0; i < 100 && (await isAlive(pid)); i++) await sleep(50);
  killQuietly(pid, 'SIGKILL');
  for (let i = 0; i < 100 && (await isAlive(pid)); i++) await sleep(20);
}

/** Starts a detached process with its output in `log`; returns its pid. */
function daemon(cmd: string, args: string[], log: string): number {
  const fd = openSync(log, 'a', 0o600);
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
  child.unref();
  if (child.pid === undefined) throw new SandboxError(`could not start ${cmd}`);
  return child.pid;
}

/**
 * Test hosts on this machine: each a network namespace joined to one bridge
 * here (their shared segment, like a VPC subnet), running its own agent, with
 * an instance type, a price and a lifecycle, and its own instance metadata
 * endpoint where a spot notice can be scheduled. Addresses are the
 * project's own and used only inside these namespaces and this bridge.
 */
export class LocalProvider implements Provider {
  readonly kind = 'local' as const;
  constructor(readonly config: LocalProviderConfig) {}

  private get stateFile(): string {
    return join(this.config.stateDir, 'local.json');
  }

  get gateway(): string {
    const [a, b] = octets(this.config.subnet);
    return `${a}.${b}.0.1`;
  }

  private async readState(): Promise<LocalState | null> {
    if (!existsSync(this.stateFile)) return null;
    return LocalState.parse(JSON.parse(await readFile(this.stateFile, 'utf8')));
  }

  private async writeState(s: LocalState): Promise<void> {
    await writeFile(`${this.stateFile}.tmp`, JSON.stringify(s, null, 2), { mode: 0o600 });
    await rename(`${this.stateFile}.tmp`, this.stateFile);
  }

  /**
   * The segment: a bridge here with the gateway address. Idempotent; create()
   * calls it, and a scheduler that must listen where hosts reach it needs it first.
   */
  async prepareSegment(): Promise<void> {
    // The agents' own bridge set-up: the subnet's gateway address, a fixed MAC.
    await ensureBridge({ name: this.config.bridge, subnet: this.config.subnet });
  }

  async hosts(): Promise<HostRecord[]> {
    return (await this.readState())?.hosts ?? [];
  }

  async create(specs: readonly HostSpec[]): Promise<HostRecord[]> {
    if ((await this.hosts()).length > 0) throw new ConflictError(`local hosts are already up (${this.stateFile}); hubshift local down removes them`);
    const [a, b] = octets(this.config.subnet);
    const prefix = `${a}.${b}`;
    await mkdir(this.config.stateDir, { recursive: true, mode: 0o700 });
    // The hosts share this machine's kernel, and its connection-tracking table is written only from here (the agents,
    // each in its own namespace, are told to leave it): criu walks all of it twice in every dump.
    await shrinkConntrackTable();
    const storeDir = join(this.config.stateDir, 'store');
    await mkdir(storeDir, { recursive: true, mode: 0o700 });
    const state: LocalState = { version: 1, bridge: this.config.bridge, subnet: this.config.subnet, gateway: this.gateway, storeDir, metadataPid: null, hosts: [] };
    await this.writeState(state);
    try {
      await this.prepareSegment();
      for (const [i, spec] of specs.entries()) {
        const netns = `hsh-${spec.name}`;
        const rootVeth = `${this.config.bridge.slice(0, 10)}u${i}`;
        const dataDir = join(this.config.stateDir, 'hosts', spec.name);
        await mkdir(dataDir, { recursive: true, mode: 0o700 });
        await ip(['netns', 'add', netns]);
        const host: LocalHost = {
          ...spec,
          address: `${prefix}.0.${10 + i}`,
          agentUrl: `http://${prefix}.0.${10 + i}:7301`,
          tokenFile: join(dataDir, 'agent.token'),
          agentPid: null,
          metadataUrl: `http://${this.gateway}:1`,
          dataDir,
          netns,
          rootVeth,
        };
        state.hosts.push(host);
        await this.writeState(state);
        await ip(['link', 'add', rootVeth, 'type', 'veth', 'peer', 'name', 'uplink', 'netns', netns]);
        await ip(['link', 'set', rootVeth, 'master', this.config.bridge, 'up']);
        await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
        await writeFile(host.tokenFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      }
      // One process serves every host's metadata endpoint, on the gateway address.
      const endpoints = join(this.config.stateDir, 'metadata.json');
      await rm(endpoints, { force: true });
      state.metadataPid = daemon(process.execPath, [BIN, 'local', 'serve-metadata', '--state-dir', this.config.stateDir], join(this.config.stateDir, 'metadata.log'));
      await this.writeState(state);
      const served = await waitFor(
        'the local metadata endpoints',
        async () => {
          if (state.metadataPid !== null && !(await isAlive(state.metadataPid))) throw new SandboxError(`the metadata endpoints exited at start; see ${join(this.config.stateDir, 'metadata.log')}`);
          if (!existsSync(endpoints)) return undefined;
          return MetadataEndpoints.parse(JSON.parse(await readFile(endpoints, 'utf8')));
        },
        { timeoutMs: 20_000, intervalMs: 50 },
      );
      for (const host of state.hosts) {
        host.metadataUrl = served.urls[host.name] ?? host.metadataUrl;
        host.agentPid = this.spawnAgent(state, host);
        await this.writeState(state);
      }
      for (const host of state.hosts) await this.waitForAgent(host);
    } catch (err) {
      await this.removeAll().catch(() => undefined);
      throw err;
    }
    return state.hosts.map((h) => HostRecord.parse(h));
  }

  /** Starts a host's agent in its namespace; returns its pid. */
  private spawnAgent(state: LocalState, host: LocalHost): number {
    const i = state.hosts.findIndex((h) => h.name === host.name);
    const args = [
      `--net=/run/netns/${host.netns}`,
      process.execPath,
      ...AGENT_NODE_OPTIONS,
      BIN,
      'agent',
      '--host', host.address,
      '--port', '7301',
      '--token-file', host.tokenFile,
      '--data-dir', host.dataDir,
      '--store', state.storeDir,
      '--bridge', 'hsbr0',
      '--bridge-address', `${host.address}/16`,
      '--uplink', 'uplink',
      '--subnet', this.config.subnet,
      '--address-pool', `${(1 + i) * 256 + 2}-${(1 + i) * 256 + 1 + Math.min(253, Math.max(1, this.config.addressPoolSize ?? 253))}`,
      '--log-level', this.config.logLevel ?? 'info',
      // A test host removed goes as the cloud takes a machine: what it was doing is cut, not finished.
      '--stop-timeout', '0',
      '--incoming-timeout', String(this.config.incomingTimeoutSeconds ?? 30),
      '--move-idle-timeout', String(this.config.moveIdleTimeoutSeconds ?? 30),
      '--conntrack-buckets', '0',
    ];
    if (this.config.criuActionScript) args.push('--criu-action-script', this.config.criuActionScript);
    args.push(...(this.config.agentArgs ?? []));
    if (this.config.scheduler) {
      args.push(
        '--node', host.name,
        '--scheduler', this.config.scheduler.url,
        '--scheduler-token-file', this.config.scheduler.tokenFile,
        '--node-type', host.instanceType,
        '--lifecycle', host.lifecycle,
        '--price', String(host.pricePerHour),
        '--memory', String(host.memoryBytes),
        '--cpus', String(host.cpus),
        '--instance-id', localInstanceId(host.name),
        '--push-interval', String(this.config.pushIntervalSeconds ?? 5),
        '--metadata-endpoint', host.metadataUrl,
        '--metadata-interval', String(this.config.metadataIntervalSeconds ?? 5),
      );
    }
    return daemon('nsenter', args, join(host.dataDir, 'agent.log'));
  }

  private async waitForAgent(host: LocalHost): Promise<void> {
    const client = new AgentClient(host.agentUrl, (await readFile(host.tokenFile, 'utf8')).trim(), 2_000);
    await waitFor(
      `the agent of ${host.name} to answer at ${host.agentUrl}`,
      async () => {
        if (host.agentPid !== null && !(await isAlive(host.agentPid))) throw new SandboxError(`the agent of ${host.name} exited; see ${join(host.dataDir, 'agent.log')}`);
        return (await client.health().then(() => true, () => false)) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  }

  /**
   * Starts a host's agent again (stopping it first if it still runs), as a
   * node's agent restarts under systemd: its sessions and moves under way
   * carry on, and the new agent takes them over.
   */
  async restartAgent(name: string): Promise<void> {
    const state = await this.readState();
    const host = state?.hosts.find((h) => h.name === name);
    if (!state || !host) throw new SandboxError(`no local host named ${name}`);
    await stopPid(host.agentPid);
    host.agentPid = this.spawnAgent(state, host);
    await this.writeState(state);
    await this.waitForAgent(host);
  }

  /** Schedules a notice on a host's metadata endpoint, as EC2 would announce it. */
  async notice(host: string, action: 'terminate' | 'stop' | 'hibernate' | 'rebalance', inSeconds = 120): Promise<unknown> {
    const h = (await this.hosts()).find((x) => x.name === host);
    if (!h) throw new SandboxError(`no local host ${host} (hubshift local up makes them)`);
    const res = await fetch(new URL('/hubshift/notice', h.metadataUrl), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ action, in: inSeconds }) });
    if (!res.ok) throw new SandboxError(`the metadata endpoint of ${host} refused the notice: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /**
   * Removes every host: its sessions (through its agent, else by the pids
   * its records hold), its agent, its namespace and link, then the metadata
   * daemon and the bridge. Safe to run again, and after a partial `create`.
   */
  async removeAll(): Promise<void> {
    const state = await this.readState();
    if (!state) return;
    for (const host of state.hosts) await this.removeHostParts(host);
    await stopPid(state.metadataPid);
    await run('ip', ['link', 'del', state.bridge], { allowFailure: true, timeoutMs: 10_000 });
    await rm(this.config.stateDir, { recursive: true, force: true });
  }

  /** Removes one host, as the cloud takes back an instance: what runs on it is gone. */
  async removeHost(name: string): Promise<void> {
    const state = await this.readState();
    const host = state?.hosts.find((h) => h.name === name);
    if (!state || !host) return;
    await this.removeHostParts(host);
    state.hosts = state.hosts.filter((h) => h.name !== name);
    await this.writeState(state);
  }

  /** The cloud's side for the scheduler's workers: a released host is removed; addresses move with their namespace. */
  fleet(): NodeFleet {
    return { release: (node) => this.removeHost(node.name), moveAddress: async () => undefined };
  }

  private async removeHostParts(host: LocalHost): Promise<void> {
    const token = await readFile(host.tokenFile, 'utf8').then((t) => t.trim(), () => '');
    if (token.length >= 16) {
      const client = new AgentClient(host.agentUrl, token, 30_000);
      const sessions = await client.listSessions().catch(() => []);
      for (const s of sessions) await client.removeSession(s.id).catch(() => undefined);
    }
    await stopPid(host.agentPid);
    // Post-copy moves out of it still serving memory, while its link is up: their targets' daemons then end too.
    await killOutgoing(host.dataDir);
    // Stop-and-copy moves out of it under way: the session's stopped processes.
    await killStoppedCopies(host.dataDir);
    // Sessions being moved in, whose restore may have outlived the agent that started it: by the pid criu wrote.
    await killIncomingCopies(host.dataDir);
    // Sessions its agent could not remove: by the pids their records hold.
    const dir = join(host.dataDir, 'sessions');
    for (const id of existsSync(dir) ? await readdir(dir) : []) {
      const rec = await readFile(join(dir, id, 'session.json'), 'utf8').then((t) => Session.safeParse(JSON.parse(t)), () => null);
      if (rec?.success && rec.data.pid !== null) killQuietly(rec.data.pid, 'SIGKILL');
      if (existsSync(netnsPath(id))) await run('ip', ['netns', 'del', netnsName(id)], { allowFailure: true, timeoutMs: 10_000 });
    }
    if (existsSync(`/run/netns/${host.netns}`)) {
      // What the agent started in its own namespace and left: a lazy-pages daemon whose source vanished waits for ever
      // on a connection nothing will close (its agent's stall watch is gone with the agent), a page server, a guard.
      const left = await run('ip', ['netns', 'pids', host.netns], { allowFailure: true, timeoutMs: 10_000 });
      for (const pid of left.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p))) killQuietly(Number(pid), 'SIGKILL');
      // Networks made ahead for moves in under way (their veths are on this host): their namespaces' names.
      const links = await run('ip', ['-n', host.netns, '-o', 'link', 'show'], { allowFailure: true, timeoutMs: 10_000 });
      for (const id of stagedSessions(links.stdout)) {
        const staged = stagingNetworkNames(id).netns;
        if (existsSync(netnsFile(staged))) await run('ip', ['netns', 'del', staged], { allowFailure: true, timeoutMs: 10_000 });
      }
      await run('ip', ['netns', 'del', host.netns], { allowFailure: true, timeoutMs: 10_000 });
    }
    await run('ip', ['link', 'del', host.rootVeth], { allowFailure: true, timeoutMs: 10_000 });
  }
}

/** The state file's hosts, for the metadata daemon (it runs in its own process). */
export async function readLocalHosts(stateDir: string): Promise<{ gateway: string; hosts: HostRecord[] }> {
  const s = LocalState.parse(JSON.parse(await readFile(join(stateDir, 'local.json'), 'utf8')));
  return { gateway: s.gateway, hosts: s.hosts };
}

const GiB = 2 ** 30;

/** The instance id a local host's metadata endpoint and agent both give (EventBridge-shaped events name it). */
export function localInstanceId(host: string): string {
  return `i-local${host.replace(/[^a-z0-9]/g, '')}`.slice(0, 19);
}

/** N test hosts: the first `spot` are spot, the sizes and prices vary like a small cloud catalog. */
export function localHostSpecs(n: number, spot = Math.min(1, n)): HostSpec[] {
  const catalog = [
    { instanceType: 'local.large', memoryBytes: 4 * GiB, cpus: 2, onDemand: 0.1, spot: 0.031 },
    { instanceType: 'local.xlarge', memoryBytes: 8 * GiB, cpus: 4, onDemand: 0.2, spot: 0.062 },
    { instanceType: 'local.medium', memoryBytes: 2 * GiB, cpus: 1, onDemand: 0.05, spot: 0.016 },
  ];
  return Array.from({ length: n }, (_, i) => {
    const t = catalog[i % catalog.length]!;
    const isSpot = i < spot;
    return { name: `host-${i + 1}`, instanceType: t.instanceType, lifecycle: isSpot ? 'spot' : 'on-demand', pricePerHour: isSpot ? t.spot : t.onDemand, memoryBytes: t.memoryBytes, cpus: t.cpus };
  });
}
