import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { z } from 'zod';
import { KernelChannel } from '../agent/kernel-channel.js';
import { askState, kernelWithState } from '../agent/kernel-state.js';
import { LocalProvider } from '../cloud/local-provider.js';
import type { HostSpec } from '../core/cloud.js';
import type { ActionRecord } from '../core/control.js';
import { GATEWAY_DEFAULTS } from '../hub/gateway-config.js';
import { spawnThroughHub, startHub, type TestHub } from '../hub/local-hub.js';
import { SchedulerClient } from '../scheduler/scheduler-client.js';
import { startScheduler, type RunningScheduler } from '../scheduler/scheduler.js';
import { run, sleep, waitFor } from '../util/exec.js';
import { freePort, startRedis } from '../util/local-redis.js';

const GiB = 2 ** 30;
/** The spot notice's lead: EC2 gives two minutes; one is plenty for the demo's sessions and keeps it short. */
const NOTICE_SECONDS = 60;
const ROOT = join(import.meta.dirname, '../..');

/**
 * The three test hosts: a cheap spot host (where sessions start), a large
 * dear on-demand host and a small one that is cheaper per GB than the large.
 */
const HOSTS: HostSpec[] = [
  { name: 'host-1', instanceType: 'local.large', lifecycle: 'spot', pricePerHour: 0.031, memoryBytes: 4 * GiB, cpus: 2 },
  { name: 'host-2', instanceType: 'local.xlarge', lifecycle: 'on-demand', pricePerHour: 0.2, memoryBytes: 8 * GiB, cpus: 4 },
  { name: 'host-3', instanceType: 'local.medium', lifecycle: 'on-demand', pricePerHour: 0.024, memoryBytes: 1.25 * GiB, cpus: 1 },
];

/**
 * Policies tuned to play in two minutes: the shipped spot eviction, idle after 15 s, right-sizing every 5 s over
 * 30 s (a cron of six fields, the first the seconds).
 */
async function demoPolicies(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'guards.yaml'), 'kind: guards\nbudgets: { perNode: 4, total: 10 }\ncooldown: 5s\nquietHours: []\n');
  await writeFile(join(dir, 'idle.yaml'), 'kind: idle\nidleFor: 15s\ncpuBelow: 0.2\n');
  await writeFile(join(dir, 'spot-eviction.yaml'), await readFile(join(ROOT, 'policies/spot-eviction.yaml'), 'utf8'));
  await writeFile(join(dir, 'rightsize.yaml'), 'kind: rightsize\nschedule: "*/5 * * * * *"\nwindow: 30s\npercentile: 95\nheadroom: 1.25\nminSavingPerHour: 0.0001\n');
}

export interface Check {
  what: string;
  ok: boolean;
  detail?: string;
}

interface User {
  name: string;
  token: string;
  base: string;
  sessionId: string;
  kernelId: string;
  hash: string;
  channel: KernelChannel | null;
}

export interface DemoOptions {
  headless: boolean;
  /** A progress line. */
  say(line: string): void;
  /** Given at once: stops everything started so far (Ctrl-C). */
  onTeardown(stop: () => Promise<void>): void;
}

/** Everything the demo started, stopped in reverse order, once; what starts while it stops is stopped too. */
class Teardown {
  private readonly steps: Array<{ what: string; run: () => Promise<unknown> }> = [];
  private readonly late: Promise<unknown>[] = [];
  private done: Promise<void> | undefined;
  add(what: string, run: () => Promise<unknown>): void {
    if (this.done) this.late.push(run().catch((err: Error) => process.stderr.write(`demo: stopping ${what}: ${err.message}\n`)));
    else this.steps.push({ what, run });
  }
  all(): Promise<void> {
    this.done ??= (async () => {
      for (const s of this.steps.reverse()) await s.run().catch((err: Error) => process.stderr.write(`demo: stopping ${s.what}: ${err.message}\n`));
    })();
    return this.done.then(async () => {
      while (this.late.length) await Promise.all(this.late.splice(0));
    });
  }
}

const secondsSince = (t0: number): string => ((performance.now() - t0) / 1000).toFixed(1);

/** An unused 10.X.0.0/16 for the demo's hosts (X from 180 to 199). */
async function unusedSegment(): Promise<string> {
  const used = (await run('ip', ['-o', '-4', 'addr', 'show'])).stdout;
  for (let x = 180; x < 200; x++) if (!used.includes(`inet 10.${x}.`)) return `10.${x}.0.0/16`;
  throw new Error('no unused 10.180-199.0.0/16 for the demo hosts: are old demo bridges left over? (ip -br addr)');
}

/**
 * hubshift's whole job on this machine: Redis, the scheduler with its
 * workers, gateway and dashboard, three test hosts each with its agent,
 * JupyterHub with its proxy, four users whose kernels hold state; then an
 * idle checkpoint and wake, a spot eviction, a right-sizing move and a
 * consolidation, each checked; a report with the ledger's dollars.
 */
export async function runDemo(o: DemoOptions): Promise<{ ok: boolean; checks: Check[]; teardown: () => Promise<void>; urls: { hub: string; dashboard: string; token: string } | null }> {
  const t0 = performance.now();
  const say = (m: string): void => o.say(`[${secondsSince(t0).padStart(6)} s] ${m}`);
  const teardown = new Teardown();
  o.onTeardown(() => teardown.all());
  const checks: Check[] = [];
  const check = (what: string, ok: boolean, detail?: string): void => {
    checks.push({ what, ok, detail });
    say(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? ` (${detail})` : ''}`);
  };
  const tmp = await mkdtemp(join(tmpdir(), 'hubshift-demo-'));
  teardown.add('the demo directory', () => rm(tmp, { recursive: true, force: true }));
  let urls: { hub: string; dashboard: string; token: string } | null = null;
  try {
    say('starting Redis');
    const redis = await startRedis();
    teardown.add('Redis', () => redis.close());

    const subnet = await unusedSegment();
    const base = { stateDir: join(tmp, 'local'), bridge: `hsdemo${randomBytes(2).toString('hex')}`, subnet, pushIntervalSeconds: 1, metadataIntervalSeconds: 1, logLevel: 'warn' };
    const segment = new LocalProvider(base);
    await segment.prepareSegment();
    teardown.add('the hosts bridge', () => run('ip', ['link', 'del', base.bridge], { allowFailure: true }));

    const policies = join(tmp, 'policies');
    await demoPolicies(policies);
    const token = randomBytes(24).toString('hex');
    const tokenFile = join(tmp, 'scheduler.token');
    await writeFile(tokenFile, token, { mode: 0o600 });
    const hubPort = await freePort();
    say(`starting the scheduler (policies: ${policies}), its workers, the session gateway and the dashboard`);
    const logFile = join(tmp, 'scheduler.log');
    const scheduler: RunningScheduler = await startScheduler(
      {
        host: segment.gateway,
        port: 0,
        token,
        redisUrl: redis.url,
        policiesDir: policies,
        intervalMs: 1_000,
        workers: true,
        worker: { lockMs: 15_000, concurrency: 4, fleet: segment.fleet() },
        queue: { attempts: 3, backoffMs: 500 },
        // Its hosts push every second: twenty missed and a host is silent (a host the cloud took, forgotten that long after its deadline).
        state: { nodeSilentAfterMs: 20_000 },
        gateway: { config: { ...GATEWAY_DEFAULTS, port: 0 }, hub: { apiUrl: `http://127.0.0.1:${hubPort}/hub/api`, token, intervalMs: 1_000 } },
      },
      pino({ level: 'info' }, pino.destination({ dest: logFile, sync: true })),
    );
    teardown.add('the scheduler', () => scheduler.close());
    const c = new SchedulerClient(scheduler.url, token);

    say('starting three test hosts (network namespaces, an agent each, a metadata endpoint each)');
    // The same hosts seen with the scheduler to register with (the segment's fleet reads the same state).
    const provider = new LocalProvider({ ...base, scheduler: { url: scheduler.url, tokenFile } });
    teardown.add('the test hosts', () => provider.removeAll());
    const hosts = await provider.create(HOSTS);
    for (const h of hosts) say(`  ${h.name}: ${h.instanceType}, ${(h.memoryBytes / GiB).toFixed(1)} GiB, ${h.lifecycle} at $${h.pricePerHour}/h, agent ${h.agentUrl}`);
    await waitFor('the hosts to register with the scheduler', async () => ((await c.nodes()).length === HOSTS.length ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 });

    say('starting JupyterHub and its proxy (spawner: hubshift, routes through the gateway)');
    const hub: TestHub = await startHub({ hubIp: segment.gateway, schedulerUrl: scheduler.url, tokenFile, port: hubPort, lastActivityInterval: 15, onSpawned: (close) => teardown.add('JupyterHub', close) });
    urls = { hub: hub.url, dashboard: `${scheduler.url}/dashboard`, token };

    const users: User[] = [];
    for (const [name, mb] of [
      ['ann', 32],
      ['bob', 32],
      ['cai', 32],
      ['dee', 32],
    ] as const) {
      const { token: userToken, base: url } = await spawnThroughHub(hub, name);
      const s = (await c.listSessions()).find((x) => x.user === name)!;
      const k = await kernelWithState(url, userToken, mb);
      users.push({ name, token: userToken, base: url, sessionId: s.id, kernelId: k.kernelId, hash: k.hash, channel: k.channel });
      say(`  ${name}: server ${s.id} on ${s.node} through the hub at ${url}; kernel sets x = 41 and holds ${mb} MiB of random bytes`);
    }
    const dee = users.find((u) => u.name === 'dee')!;
    const bigHash = (await dee.channel!.execute('big = os.urandom(1024 * 2**20)\nbig_hash = hashlib.sha256(big).hexdigest()\nprint(big_hash)', 120_000)).stdout.trim();
    say('  dee also holds 1 GiB more (a large array)');

    const verify = async (u: User, extra?: string): Promise<boolean> => {
      u.channel?.close();
      u.channel = await KernelChannel.connect(u.base, u.token, u.kernelId);
      const st = await askState(u.channel);
      let ok = st.answer === '42' && st.hash === u.hash;
      if (extra) ok &&= (await u.channel.execute('print(big_hash == hashlib.sha256(big).hexdigest() and big_hash)', 180_000)).stdout.trim() === extra;
      return ok;
    };
    const doneAction = async (pred: (a: ActionRecord) => boolean, what: string, timeoutMs: number): Promise<ActionRecord> =>
      waitFor(what, async () => (await c.actions(500)).find((a) => a.outcome === 'done' && pred(a)), { timeoutMs, intervalMs: 500 });

    // 1. Idle: dee closes the tab.
    say('1. idle: dee stops working and closes the notebook; the idle policy checkpoints the session after 15 s');
    dee.channel?.close();
    dee.channel = null;
    const idled = await doneAction((a) => a.sessionId === dee.sessionId && a.policy === 'idle', 'the idle policy to checkpoint dee', 120_000);
    check('the idle policy checkpointed dee\'s server to the store', (await c.getSession(dee.sessionId)).state === 'checkpointed', idled.reason);
    // Only dee (a token the hub vouches for) wakes it: someone who just knows the URL does not.
    const stranger = await fetch(`${dee.base}api/kernels/${dee.kernelId}`, { signal: AbortSignal.timeout(30_000) });
    check('a request without dee\'s token does not wake dee\'s session', stranger.status === 403 && (await c.getSession(dee.sessionId)).state === 'checkpointed', `HTTP ${stranger.status}`);
    say('   dee comes back: the first request through the hub wakes the session');
    const wakeStart = performance.now();
    const res = await fetch(`${dee.base}api/kernels/${dee.kernelId}`, { headers: { Authorization: `token ${dee.token}` }, signal: AbortSignal.timeout(120_000) });
    const wakeSeconds = (performance.now() - wakeStart) / 1000;
    const woke = res.ok && (await waitFor('the scheduler to record the wake', async () => ((await c.getSession(dee.sessionId)).state === 'running' ? true : undefined), { timeoutMs: 30_000, intervalMs: 200 }).catch(() => false));
    check('a request through the hub woke dee\'s session', woke, `HTTP ${res.status} after ${wakeSeconds.toFixed(2)} s`);
    check('dee\'s kernel answers x + 1 = 42 with the same bytes, large array included', await verify(dee, bigHash));

    // 2. Spot notice on host-1.
    const spotHost = 'host-1';
    say(`2. spot: EC2 (the metadata endpoint of ${spotHost}) announces an interruption in ${NOTICE_SECONDS} s`);
    const scheduled = (await provider.notice(spotHost, 'terminate', NOTICE_SECONDS)) as { time?: string };
    const deadline = Date.parse(scheduled.time ?? new Date(Date.now() + NOTICE_SECONDS * 1000).toISOString());
    await waitFor(
      `every session off ${spotHost}`,
      async () => {
        const ss = (await c.listSessions()).filter((s) => users.some((u) => u.sessionId === s.id));
        return ss.every((s) => s.node !== spotHost && s.operation === null && (s.state === 'running' || s.state === 'checkpointed')) ? true : undefined;
      },
      { timeoutMs: 150_000, intervalMs: 500 },
    );
    const evacuatedAt = Date.now();
    const placed = (await c.listSessions()).filter((s) => users.some((u) => u.sessionId === s.id));
    check(`every session left ${spotHost} before the deadline`, evacuatedAt <= deadline, `${((deadline - evacuatedAt) / 1000).toFixed(0)} s to spare; ${placed.map((s) => `${s.user} on ${s.node ?? 'the store'}`).join(', ')}`);
    let intact = true;
    for (const u of users) intact &&= await verify(u, u === dee ? bigHash : undefined);
    check('every kernel answers with its state after the evacuation', intact);
    const deeNode = (await c.getSession(dee.sessionId)).node;
    // The cloud takes the host back at the deadline, whatever the demo does meanwhile; Ctrl-C stops the wait.
    const deadlineWait = new AbortController();
    teardown.add(`the wait for ${spotHost}'s deadline`, async () => deadlineWait.abort());
    const reclaimed = sleep(Math.max(0, deadline - Date.now()), deadlineWait.signal).then(async () => {
      say(`   the deadline passes: the cloud takes ${spotHost} back`);
      await provider.removeHost(spotHost);
    });
    // Awaited before step 4; until then a failure must not go unhandled.
    reclaimed.catch(() => undefined);

    // 3. Right-sizing, while the deadline runs out.
    say(`3. right-sizing: dee is done with the large array (del big); ${deeNode} is dear per GB, and a cheaper host now fits what dee uses`);
    await dee.channel!.execute('del big\nimport gc\ngc.collect()', 60_000);
    const moved = await doneAction((a) => a.sessionId === dee.sessionId && a.policy === 'rightsize' && a.action === 'migrate', 'right-sizing to move dee', 240_000);
    check(`right-sizing moved dee from ${moved.source} to the cheaper ${moved.target}`, (await c.getSession(dee.sessionId)).node === moved.target, moved.reason);
    check('dee\'s kernel answers with its state after the move', await verify(dee));
    await reclaimed;

    // 4. Consolidation.
    say('4. consolidation switched on (consolidate.yaml dropped into the policies, reloaded live)');
    await writeFile(join(policies, 'consolidate.yaml'), 'kind: consolidate\nutilizationBelow: 0.3\nheadroom: 1.2\nminNodes: 1\n');
    const released = await doneAction((a) => a.action === 'release-node' && a.source === moved.source, `consolidation to release ${moved.source}`, 120_000);
    const left = (await provider.hosts()).map((h) => h.name);
    check(`consolidation released the emptied ${released.source}`, !left.includes(released.source ?? ''), `hosts left: ${left.join(', ')}`);
    // Gone, so no longer priced in the ledger either.
    const listed = (await c.nodes()).map((n) => n.name);
    check(`the scheduler forgot ${released.source}`, !listed.includes(released.source ?? ''), `nodes: ${listed.join(', ')}`);
    const forgotSpot = await waitFor(`the scheduler to forget ${spotHost}`, async () => ((await c.nodes()).some((n) => n.name === spotHost) ? undefined : true), { timeoutMs: 45_000, intervalMs: 500 }).catch(() => false);
    check(`the scheduler forgot ${spotHost}, which the cloud took at its deadline`, forgotSpot, `nodes: ${(await c.nodes()).map((n) => n.name).join(', ')}`);
    intact = true;
    for (const u of users) intact &&= await verify(u);
    check('all four kernels still answer x + 1 = 42 with their bytes: no session lost', intact);

    // The ledger writes a minute at a time.
    const view = await waitFor('a minute of the cost ledger', async () => {
      const v = await c.dashboard();
      return v.ledger && v.ledger.minutes > 0 ? v : undefined;
    }, { timeoutMs: 90_000, intervalMs: 1_000 });
    const l = view.ledger!;
    // Four small sessions on three whole hosts cost more than their bytes at on-demand rates: what the
    // ledger must show is every dollar accounted for, savings by cause adding up to on-demand minus actual.
    const bySavings = Object.values(l.savingsByPolicy).reduce((a, b) => a + b, 0);
    check('the cost ledger accounts for every minute: savings by cause add up to always-on minus actual', Math.abs(bySavings - (l.totals.onDemandUsd - l.totals.actualUsd)) < 1e-9, `${l.minutes} minute(s)`);

    o.say('\nreport');
    o.say('  actions (from the scheduler\'s action log):');
    const actions = (await c.actions(500)).filter((a) => a.outcome === 'done').reverse();
    const ops = new Map<string, { bytes: number | null; downtime: number | null; seconds: number | null }>();
    for (const a of actions) {
      const st = await c.operation(a.operation).catch(() => null);
      const moved = st?.steps.find((s) => s.step === 'move' || s.step === 'checkpoint');
      const r = z.object({ downtimeSeconds: z.number().nullable().optional(), bytes: z.number().nullable().optional() }).nullable().catch(null).parse(moved?.result ?? null);
      const begun = Math.min(...(st?.steps ?? []).map((s) => Date.parse(s.createdAt)));
      const ended = Math.max(...(st?.steps ?? []).map((s) => (s.finishedAt ? Date.parse(s.finishedAt) : NaN)));
      const seconds = Number.isFinite(begun) && Number.isFinite(ended) ? (ended - begun) / 1000 : null;
      ops.set(a.operation, { bytes: r?.bytes ?? null, downtime: r?.downtimeSeconds ?? null, seconds });
    }
    const who = (id: string | null): string => users.find((u) => u.sessionId === id)?.name ?? id ?? '';
    for (const a of actions) {
      const x = ops.get(a.operation);
      o.say(
        `    ${a.at.slice(11, 19)}  ${a.action.padEnd(12)} ${who(a.sessionId).padEnd(4)} ${(a.source ?? '').padEnd(7)}${a.target ? `-> ${a.target}` : '        '}  [${a.policy}]` +
          `${x?.seconds != null ? ` ${x.seconds.toFixed(1)} s` : ''}${x?.bytes != null ? `, ${(x.bytes / 2 ** 20).toFixed(0)} MiB moved` : ''}${x?.downtime != null ? `, downtime ${x.downtime.toFixed(2)} s` : ''}  ${a.costPerHour <= 0 ? 'saves' : 'costs'} $${Math.abs(a.costPerHour).toFixed(4)}/h`,
      );
    }
    o.say(`  wake of dee through the hub: ${wakeSeconds.toFixed(2)} s`);
    o.say(`  ledger, ${l.minutes} minute(s) of ${l.date}: hubshift $${l.totals.actualUsd.toFixed(5)}, always-on on-demand $${l.totals.onDemandUsd.toFixed(5)}, idle culling $${l.totals.cullingUsd.toFixed(5)}`);
    o.say(`  saved against always-on on-demand, by cause: ${Object.entries(l.savingsByPolicy).map(([k, v]) => `${k} $${v.toFixed(5)}`).join(', ')}`);
    if (l.totals.actualUsd > l.totals.onDemandUsd) {
      // A FinOps reader's first question: the demo's hosts are mostly empty, and the baseline prices only the sessions.
      o.say('  (hubshift costs more here: four small sessions on three whole hosts, mostly empty, against their bytes alone at');
      o.say('  on-demand rates. A month of a 300-user platform: hubshift simulate --trace traces/sample-month-300-users.jsonl)');
    }
    o.say('  checks:');
    for (const ch of checks) o.say(`  ${ch.ok ? 'ok  ' : 'FAIL'} ${ch.what}`);
  } catch (err) {
    check(`the demo ran to its end`, false, (err as Error).message);
    const log = await readFile(join(tmp, 'scheduler.log'), 'utf8').catch(() => '');
    if (log) process.stderr.write(`last lines of the scheduler's log:\n${log.split('\n').slice(-15).join('\n')}\n`);
  }
  return { ok: checks.length > 0 && checks.every((x) => x.ok), checks, teardown: () => teardown.all(), urls };
}
