import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { createSchedulerApp } from '../api/scheduler-app.js';
import { PolicyHolder } from '../policy/load-policies.js';
import { ControlLoop } from './control-loop.js';
import { Planner } from './planner.js';
import { QUEUE_DEFAULTS, WORKER_DEFAULTS, type QueueOptions, type StateOptions, type WorkerOptions } from './defaults.js';
import { OpsQueue } from './queue.js';
import { closeRedis, connectRedis } from './redis.js';
import { SessionLocks } from './session-lock.js';
import { ControlState } from './state.js';
import { LedgerRecorder, type LedgerRecorderOptions } from './ledger-recorder.js';
import { LedgerStore } from './ledger-store.js';
import { DEFAULT_CULL_AFTER_MS } from '../pricing/ledger.js';
import { startGateway, type GatewayOptions, type RunningGateway } from '../hub/start-gateway.js';
import { startWorker, type RunningWorker } from './worker.js';

export interface SchedulerConfig {
  host: string;
  port: number;
  token: string;
  redisUrl: string;
  policiesDir: string;
  /** Evaluation interval (default 5 s); notices trigger a pass at once. */
  intervalMs: number;
  /** Run workers in this process (default true); `hubshift worker` runs them elsewhere. */
  workers: boolean;
  worker: Partial<WorkerOptions>;
  queue: QueueOptions;
  state: Partial<StateOptions>;
  /** The cost ledger's culling baseline and catalog (default: 1 h idle, the nodes' own types). */
  ledger?: Partial<LedgerRecorderOptions>;
  /** Run the session gateway in this process too. */
  gateway?: Omit<GatewayOptions, 'scheduler'> & {
    /** Its address as JupyterHub's proxy reaches it (default: where it listens). */
    advertiseUrl?: string;
  };
}

export interface RunningScheduler {
  url: string;
  state: ControlState;
  ledger: LedgerStore;
  recorder: LedgerRecorder;
  loop: ControlLoop;
  worker: RunningWorker | undefined;
  gateway: RunningGateway | undefined;
  close(): Promise<void>;
}

/**
 * The scheduler: API, evaluation loop, planner and (by default) workers in
 * one process. Any number of them may share one Redis: claims and locks in
 * Redis keep them from acting twice.
 */
export async function startScheduler(config: SchedulerConfig, log: Logger = pino({ name: 'hubshift-scheduler' })): Promise<RunningScheduler> {
  const policies = await PolicyHolder.open(config.policiesDir);
  const redis = connectRedis(config.redisUrl, 'hubshift-scheduler');
  const state = new ControlState(redis, config.state);
  const queue = new OpsQueue(redis, config.queue ?? QUEUE_DEFAULTS);
  const planner = new Planner(state, queue, log);
  const loop = new ControlLoop(state, planner, policies, log, config.intervalMs);
  const workerOptions = { ...WORKER_DEFAULTS, ...config.worker };
  const locks = new SessionLocks(redis, workerOptions.lockMs);
  const worker = config.workers ? startWorker(config.redisUrl, state, log, workerOptions) : undefined;
  // Known once the gateway listens (after the API, which it calls).
  const advertised: { gatewayUrl?: string } = {};
  const ledger = new LedgerStore(redis);
  const recorder = new LedgerRecorder(state, ledger, log.child({ part: 'ledger' }), { cullAfterMs: DEFAULT_CULL_AFTER_MS, ...config.ledger });
  const app = createSchedulerApp({ token: config.token, state, queue, planner, loop, locks, ledger, log, gatewayUrl: () => advertised.gatewayUrl });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  loop.start();
  recorder.start();
  const addr = server.address() as AddressInfo;
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${addr.port}`;
  log.info({ url, redis: config.redisUrl, policies: policies.policies.policies.map((p) => p.name), workers: config.workers }, 'scheduler listening');
  // The gateway asks this scheduler's API like any other: one view of sessions for both kinds of gateway.
  const gateway = config.gateway ? await startGateway({ ...config.gateway, scheduler: { url, token: config.token } }, log.child({ part: 'gateway' })) : undefined;
  advertised.gatewayUrl = gateway ? (config.gateway?.advertiseUrl ?? gateway.url) : undefined;
  let closing: Promise<void> | undefined;
  return {
    url,
    state,
    ledger,
    recorder,
    loop,
    worker,
    gateway,
    close: () => {
      closing ??= (async () => {
        loop.stop();
        recorder.stop();
        await gateway?.close();
        await new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        });
        await worker?.close();
        await queue.close();
        await closeRedis(redis);
      })();
      return closing;
    },
  };
}
