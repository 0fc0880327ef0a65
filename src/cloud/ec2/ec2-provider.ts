import type { EC2Client } from '@aws-sdk/client-ec2';
import type { CapacityRequest, CatalogEntry, HostRecord, HostSpec, LaunchCandidate, PriceTable } from '../../core/cloud.js';
import { CloudError, TimeoutError } from '../../core/errors.js';
import { buildCatalog } from '../../pricing/catalog.js';
import { catalogEntry, rankCandidates } from '../../pricing/choose-instance.js';
import { loadPriceTable } from '../../pricing/price-table.js';
import { sleep as realSleep } from '../../util/exec.js';
import type { NodeFleet, Provider } from '../provider.js';
import type { RetryOptions } from './aws-retry.js';
import { describeShapes, describeSpotQuotes } from './ec2-catalog.js';
import { ec2ClientFor } from './ec2-client.js';
import type { Ec2Config } from './ec2-config.js';
import { Ec2Instances, type Ec2Instance, type LaunchAttempt } from './ec2-instances.js';

export interface Ec2ProviderOptions {
  retry?: Partial<RetryOptions>;
  /** Waits until a new node's agent answers (default: GET /healthz until it does). */
  waitForAgent?: (agentUrl: string, signal: AbortSignal) => Promise<void>;
  /** How often a launch polls DescribeInstances, and how long it waits for running (defaults 5 s, 5 min). */
  pollMs?: number;
  runningTimeoutMs?: number;
  /** How long an agent may take to answer after boot (default 10 min: user data installs it). */
  agentTimeoutMs?: number;
  /** How long a catalog (prices move) is reused (default 10 min). */
  catalogTtlMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => Date;
}

async function healthz(agentUrl: string, signal: AbortSignal): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    const ok = await fetch(new URL('/healthz', agentUrl), { signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) }).then((r) => r.ok, () => false);
    if (ok) return;
    await realSleep(5_000, signal);
  }
}

/** What a launch did: the host, and the candidates that had no room before it. */
export interface LaunchReport {
  host: HostRecord;
  attempts: LaunchAttempt[];
}

/**
 * Machines from EC2: launched from the operator's launch template (whose user
 * data installs and starts the agent, which then registers with the scheduler),
 * found again by their cluster tag, terminated when released. Node names are
 * instance ids, the names EventBridge's notices use.
 */
export class Ec2Provider implements Provider, NodeFleet {
  readonly kind = 'ec2' as const;
  private readonly instances: Ec2Instances;
  private readonly o: Required<Omit<Ec2ProviderOptions, 'retry'>>;
  private cached: { at: number; catalog: CatalogEntry[] } | null = null;

  constructor(
    private readonly ec2: EC2Client,
    readonly config: Ec2Config,
    readonly prices: PriceTable,
    private readonly opts: Ec2ProviderOptions = {},
  ) {
    this.instances = new Ec2Instances(ec2, config, opts.retry);
    this.o = {
      waitForAgent: opts.waitForAgent ?? healthz,
      pollMs: opts.pollMs ?? 5_000,
      runningTimeoutMs: opts.runningTimeoutMs ?? 300_000,
      agentTimeoutMs: opts.agentTimeoutMs ?? 600_000,
      catalogTtlMs: opts.catalogTtlMs ?? 600_000,
      sleep: opts.sleep ?? ((ms) => realSleep(ms)),
      now: opts.now ?? (() => new Date()),
    };
  }

  /** A provider for a config file's settings: the SDK's own retries off (hubshift backs off itself). */
  static async open(config: Ec2Config, opts: Ec2ProviderOptions = {}): Promise<Ec2Provider> {
    return new Ec2Provider(ec2ClientFor(config.region), config, await loadPriceTable(config.priceTable), opts);
  }

  /** The configured types with their shapes, on-demand prices and current spot prices per zone. */
  async catalog(): Promise<CatalogEntry[]> {
    const now = this.o.now();
    if (this.cached && now.getTime() - this.cached.at < this.o.catalogTtlMs) return this.cached.catalog;
    const zones = Object.keys(this.config.subnets);
    const [shapes, quotes] = await Promise.all([
      describeShapes(this.ec2, this.config.instanceTypes, this.opts.retry),
      describeSpotQuotes(this.ec2, this.config.instanceTypes, zones, now, this.opts.retry),
    ]);
    const catalog = buildCatalog(shapes, this.prices, quotes);
    this.cached = { at: now.getTime(), catalog };
    return catalog;
  }

  private hostOf(i: Ec2Instance, catalog: readonly CatalogEntry[]): HostRecord {
    const entry = catalogEntry(catalog, i.InstanceType);
    const zone = i.Placement?.AvailabilityZone ?? '';
    const spot = i.InstanceLifecycle === 'spot';
    const ip = i.PrivateIpAddress ?? '';
    return {
      name: i.InstanceId,
      instanceType: i.InstanceType,
      lifecycle: spot ? 'spot' : 'on-demand',
      pricePerHour: spot ? (entry.spotPriceByZone[zone] ?? entry.onDemandPricePerHour) : entry.onDemandPricePerHour,
      memoryBytes: entry.memoryBytes,
      cpus: entry.cpus,
      address: ip,
      agentUrl: `http://${ip}:${this.config.agentPort}`,
      tokenFile: this.config.agentTokenFile,
      agentPid: null,
      // The instance's own metadata service, as its agent reaches it; the scheduler never calls it.
      metadataUrl: 'http://169.254.169.254',
      dataDir: this.config.dataDir,
    };
  }

  async hosts(): Promise<HostRecord[]> {
    const [catalog, found] = await Promise.all([this.catalog(), this.instances.describe()]);
    return found.filter((i) => i.PrivateIpAddress).map((i) => this.hostOf(i, catalog));
  }

  private async waitRunning(instanceId: string): Promise<Ec2Instance> {
    const deadline = this.o.now().getTime() + this.o.runningTimeoutMs;
    for (;;) {
      const [i] = await this.instances.describe([instanceId]);
      if (i?.State.Name === 'running' && i.PrivateIpAddress) return i;
      if (i && ['shutting-down', 'terminated', 'stopping', 'stopped'].includes(i.State.Name)) {
        throw new CloudError('cloud_capacity', 'InstanceTerminated', `instance ${instanceId} went ${i.State.Name} before it ran (a spot instance reclaimed at once?)`);
      }
      if (this.o.now().getTime() > deadline) throw new TimeoutError(`instance ${instanceId} was not running after ${this.o.runningTimeoutMs / 1000} s; it is left for you to look at (aws ec2 describe-instances --instance-ids ${instanceId})`);
      await this.o.sleep(this.o.pollMs);
    }
  }

  private async launchAt(candidates: readonly LaunchCandidate[]): Promise<LaunchReport> {
    const launched = await this.instances.launch(candidates);
    try {
      const running = await this.waitRunning(launched.instanceId);
      const host = this.hostOf(running, await this.catalog());
      await this.o.waitForAgent(host.agentUrl, AbortSignal.timeout(this.o.agentTimeoutMs));
      return { host, attempts: launched.attempts };
    } catch (err) {
      // Nothing half-made is left running up a bill.
      await this.instances.terminate([launched.instanceId]).catch(() => undefined);
      throw err;
    }
  }

  /** Launches the cheapest node that fits, falling back through types, zones and markets. */
  async launchFitting(request: CapacityRequest): Promise<LaunchReport> {
    return this.launchAt(rankCandidates(await this.catalog(), request));
  }

  /** Hosts of the named types and markets (the spec's price and size are the catalog's, not the caller's). */
  async create(specs: readonly HostSpec[]): Promise<HostRecord[]> {
    const catalog = await this.catalog();
    const zones = Object.keys(this.config.subnets);
    const out: HostRecord[] = [];
    for (const spec of specs) {
      const entry = catalogEntry(catalog, spec.instanceType);
      const candidates: LaunchCandidate[] = zones
        .map((zone) => ({ instanceType: entry.name, zone, lifecycle: spec.lifecycle, pricePerHour: spec.lifecycle === 'spot' ? (entry.spotPriceByZone[zone] ?? Infinity) : entry.onDemandPricePerHour }))
        .filter((c) => Number.isFinite(c.pricePerHour))
        .sort((a, b) => a.pricePerHour - b.pricePerHour);
      if (candidates.length === 0) throw new CloudError('cloud_capacity', 'Unsupported', `${spec.instanceType} has no ${spec.lifecycle} price in the configured zones (${zones.join(', ')})`);
      out.push((await this.launchAt(candidates)).host);
    }
    return out;
  }

  async removeAll(): Promise<void> {
    await this.instances.terminate((await this.instances.describe()).map((i) => i.InstanceId));
  }

  async release(node: { name: string; instanceId: string }): Promise<void> {
    await this.instances.terminate([node.instanceId]);
  }

  async moveAddress(ip: string, to: { name: string; instanceId: string }): Promise<void> {
    await this.instances.assignAddress(ip, to.instanceId);
  }
}
