import { DEFAULT_CULL_AFTER_MS } from '../pricing/ledger.js';
import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { pino } from 'pino';
import { QUEUE_DEFAULTS, SCHEDULER_DEFAULTS, STATE_DEFAULTS, WORKER_DEFAULTS, type WorkerOptions } from '../scheduler/defaults.js';
import { integer, port, positiveNumber, stopOnSignal } from './args.js';
import { GATEWAY_DEFAULTS } from '../hub/gateway-config.js';
import { InputError } from '../core/errors.js';
import { gatewayConfig, hubActivityConfig, withGatewayOptions, type GatewayCliOpts } from './gateway-command.js';
import { Progress, printResult } from './output.js';
import { sleep } from '../util/exec.js';
import { schedulerClient, withSchedulerConn, type SchedulerConnOpts } from './scheduler-client-options.js';
import { readOrCreateTokenFile } from './token-file.js';
import { describeLane, evacuationProgress } from '../scheduler/evacuation-report.js';

const workerOptions = (cmd: Command): Command =>
  cmd
    .option('--concurrency <n>', 'steps run at once', integer('--concurrency', 1), WORKER_DEFAULTS.concurrency)
    .option('--lock-seconds <s>', "how long a job's and a session's lock last without renewal: a dead worker's job is taken over after about this long", positiveNumber('--lock-seconds'), WORKER_DEFAULTS.lockMs / 1000)
    .option('--moves-per-node <n>', 'sessions moved or checkpointed off one node at once, across all workers, for a node whose agent registered no figure of its own (agents register one: hubshift agent --moves-at-once; more than its cores and link carry share them, and each stays frozen longer)', integer('--moves-per-node', 1), WORKER_DEFAULTS.movesPerNode)
    .option('--log-level <level>', 'pino log level', 'info');

interface WorkerCliOpts {
  concurrency: number;
  lockSeconds: number;
  movesPerNode: number;
}

/** The worker options both `scheduler` and `worker` take (workerOptions), as the workers want them. */
const workerConfig = (o: WorkerCliOpts): Pick<WorkerOptions, 'concurrency' | 'lockMs' | 'movesPerNode'> => ({ concurrency: o.concurrency, lockMs: o.lockSeconds * 1000, movesPerNode: o.movesPerNode });

export function registerSchedulerCommands(program: Command): void {
  workerOptions(withGatewayOptions(
    program
      .command('scheduler')
      .description('run the scheduler: API for agents, notices and operators; policy evaluation; the job queue and (unless --workers 0) its workers')
      .requiredOption('--token-file <file>', 'bearer token for the API (created with a random token if missing)')
      .option('--port <port>', 'HTTP port (0 picks a free one)', port, SCHEDULER_DEFAULTS.port)
      .option('--host <address>', 'address to listen on', SCHEDULER_DEFAULTS.host)
      .option('--redis <url>', 'redis://host:port, or redis-cluster://host:port,host:port for a Redis Cluster', SCHEDULER_DEFAULTS.redisUrl)
      .option('--policies <dir>', 'policy files (*.yaml)', SCHEDULER_DEFAULTS.policiesDir)
      .option('--interval <seconds>', 'evaluate the policies this often (notices trigger a pass at once)', positiveNumber('--interval'), SCHEDULER_DEFAULTS.intervalMs / 1000)
      .addOption(new Option('--workers <n>', 'run workers in this process: 1 (default) or 0 (run hubshift worker elsewhere)').choices(['0', '1']).default('1'))
      .option('--attempts <n>', 'tries of each step before its operation fails', integer('--attempts', 1), QUEUE_DEFAULTS.attempts)
      .option('--sample-retention <n>', 'usage samples kept per session', integer('--sample-retention', 1), STATE_DEFAULTS.sampleRetention)
      .option('--node-silent-after <seconds>', "a node whose agent has not pushed for this long is silent: nothing is placed on it until it is heard from again; one not heard from since an interruption's deadline this long ago is forgotten, as the cloud took it", positiveNumber('--node-silent-after'), STATE_DEFAULTS.nodeSilentAfterMs / 1000)
      .option('--gateway-port <port>', 'also run the session gateway for JupyterHub on this port (0 picks a free one)', port)
      .option('--gateway-host <address>', 'address the gateway listens on', GATEWAY_DEFAULTS.host)
      .option('--gateway-url <url>', "the gateway's address as the hub's proxy reaches it, told to the spawner (default: where it listens)")
      .option('--ec2-config <file>', 'nodes come from EC2 (YAML: region, cluster, launch template, subnets, instance types, price table; `terraform output -raw ec2_config` writes it): released nodes are terminated, moved sessions take their private IP along, the ledger prices baselines from the catalog')
      .option('--cull-after <seconds>', "the cost ledger's idle-culling baseline: sessions killed after this long idle", positiveNumber('--cull-after'), DEFAULT_CULL_AFTER_MS / 1000),
  )).action(async (o: GatewayCliOpts & WorkerCliOpts & { ec2Config?: string; cullAfter: number; tokenFile: string; port: number; host: string; redis: string; policies: string; interval: number; workers: string; attempts: number; sampleRetention: number; nodeSilentAfter: number; logLevel: string; gatewayPort?: number; gatewayHost: string; gatewayUrl?: string }) => {
    if (o.gatewayPort === undefined && (o.gatewayUrl || o.hubApiUrl)) throw new InputError('--gateway-url and --hub-api-url are options of the gateway: give --gateway-port too');
    // The scheduler's code and EC2's SDK load only for this command (see main.ts).
    const [{ startScheduler }, { Ec2Provider }, { loadEc2Config }, { instanceTypesOf }] = await Promise.all([
      import('../scheduler/scheduler.js'),
      import('../cloud/ec2/ec2-provider.js'),
      import('../cloud/ec2/ec2-config.js'),
      import('../pricing/catalog.js'),
    ]);
    const ec2 = o.ec2Config ? await Ec2Provider.open(await loadEc2Config(resolve(o.ec2Config))) : undefined;
    const s = await startScheduler(
      {
        ledger: { cullAfterMs: o.cullAfter * 1000, instanceTypes: ec2 ? async () => instanceTypesOf(await ec2.catalog()) : undefined },
        host: o.host,
        port: o.port,
        token: await readOrCreateTokenFile(o.tokenFile),
        redisUrl: o.redis,
        policiesDir: resolve(o.policies),
        intervalMs: o.interval * 1000,
        workers: o.workers !== '0',
        worker: { ...workerConfig(o), fleet: ec2 },
        queue: { ...QUEUE_DEFAULTS, attempts: Math.round(o.attempts) },
        state: { sampleRetention: Math.round(o.sampleRetention), nodeSilentAfterMs: o.nodeSilentAfter * 1000 },
        gateway: o.gatewayPort === undefined ? undefined : { config: gatewayConfig(o, o.gatewayHost, o.gatewayPort), hub: await hubActivityConfig(o, o.tokenFile), advertiseUrl: o.gatewayUrl },
      },
      pino({ name: 'hubshift-scheduler', level: o.logLevel }),
    );
    process.stderr.write(`hubshift scheduler listening on ${s.url}\n`);
    if (s.gateway) process.stderr.write(`hubshift gateway listening on ${s.gateway.url}\n`);
    stopOnSignal(() => s.close());
  });

  workerOptions(
    program
      .command('worker')
      .description('run workers only: they take steps off the scheduler\'s queue in Redis and carry them out through the agents')
      .option('--redis <url>', 'redis://host:port, or redis-cluster://host:port,host:port', SCHEDULER_DEFAULTS.redisUrl),
  ).action(async (o: WorkerCliOpts & { redis: string; logLevel: string }) => {
    const [{ closeRedis, connectRedis }, { ControlState }, { startWorker }] = await Promise.all([import('../scheduler/redis.js'), import('../scheduler/state.js'), import('../scheduler/worker.js')]);
    const log = pino({ name: 'hubshift-worker', level: o.logLevel });
    const redis = connectRedis(o.redis, 'hubshift-worker-state');
    const w = startWorker(o.redis, new ControlState(redis), log, workerConfig(o));
    await w.worker.waitUntilReady();
    process.stderr.write(`hubshift worker taking jobs from ${o.redis}\n`);
    stopOnSignal(async () => {
      await w.close();
      await closeRedis(redis);
    });
  });

  withSchedulerConn(program.command('notice').description('post a spot interruption or rebalance notice for a node, as an EventBridge event or the metadata service would').argument('<node>', 'the node'))
    .addOption(new Option('--action <action>', 'what happens to the node').choices(['terminate', 'stop', 'hibernate', 'rebalance']).makeOptionMandatory())
    .option('--in <seconds>', 'seconds until it happens (interruptions; default 120)', positiveNumber('--in'))
    .option('--wait', 'follow the evacuation and print what became of each session (the report)', false)
    .action(async (node: string, o: SchedulerConnOpts & { action: 'terminate' | 'stop' | 'hibernate' | 'rebalance'; in?: number; wait: boolean }) => {
      const c = await schedulerClient(o);
      const r = await c.notice({ node, action: o.action, ...(o.in !== undefined ? { in: o.in } : {}) });
      if (o.wait) {
        const p = new Progress(`evacuating ${node}`, o.json);
        const deadline = r.notice.deadline ? Date.parse(r.notice.deadline) : Date.now() + 600_000;
        let report = await c.evacuation(r.notice.id);
        while (report.sessions.some((x) => x.outcome === 'planned') && Date.now() < deadline + 60_000) {
          p.step(evacuationProgress(report));
          await sleep(500);
          report = await c.evacuation(r.notice.id);
        }
        p.done();
        return printResult(o.json, report, () =>
          [
            `notice ${r.notice.id}: ${r.notice.kind} of ${node}${r.notice.deadline ? ` at ${r.notice.deadline}` : ''}`,
            ...report.sessions.map((x) => `  ${x.sessionId} ${x.action} ${x.outcome}${x.lane ? ` (${describeLane(x.lane)})` : ''}${x.target ? ` -> ${x.target}` : ''}${x.marginSeconds !== null ? ` (${x.marginSeconds.toFixed(0)} s before the deadline)` : ''}${x.detail ? `: ${x.detail}` : ''}`),
            ...(report.left.length ? [`  left on ${node}: ${report.left.join(', ')}`] : []),
          ].join('\n'),
        );
      }
      printResult(o.json, r, () =>
        [
          `notice ${r.notice.id}: ${r.notice.kind} of ${r.notice.node}${r.notice.deadline ? ` at ${r.notice.deadline}` : ''}`,
          ...r.planned.map((op) => `  planned ${op.id}: ${op.kind} ${op.sessionId ?? ''} ${op.target ? `-> ${op.target}` : ''} (${op.decision.reason})`),
          r.planned.length ? '' : '  nothing planned',
        ]
          .filter(Boolean)
          .join('\n'),
      );
    });

  withSchedulerConn(program.command('jobs').description('the queue\'s recent jobs (a step of an operation each), newest first; failed ones with their reason'))
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(['active', 'waiting', 'waiting-children', 'delayed', 'prioritized', 'completed', 'failed']))
    .option('--limit <n>', 'at most this many', integer('--limit', 1), 50)
    .option('--actions', 'the action log instead: every operation planned, done or failed, with its reason', false)
    .action(async (o: SchedulerConnOpts & { state?: string; limit: number; actions: boolean }) => {
      const c = await schedulerClient(o);
      if (o.actions) {
        const actions = await c.actions(o.limit);
        return printResult(o.json, { actions }, () =>
          actions.length ? actions.map((a) => `${a.at}  ${a.outcome.padEnd(7)} ${a.action.padEnd(10)} ${(a.sessionId ?? a.source ?? '').padEnd(10)} [${a.policy}] ${a.reason}${a.detail ? ` (${a.detail})` : ''}`).join('\n') : 'no actions',
        );
      }
      const jobs = await c.jobs(o.state, o.limit);
      printResult(o.json, { jobs }, () =>
        jobs.length
          ? jobs.map((j) => `${j.id.padEnd(28)} ${j.state.padEnd(16)} ${j.kind.padEnd(10)} ${(j.sessionId ?? j.source ?? '').padEnd(10)} ${j.source ?? '-'} -> ${j.target ?? '-'} [${j.policy}]${j.failedReason ? `  (${j.failedReason})` : ''}`).join('\n')
          : 'no jobs',
      );
    });
}
