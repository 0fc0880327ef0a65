import type { Logger } from 'pino';
import type { NodeRegistration } from '../core/control.js';
import { UpstreamError, errorMessage } from '../core/errors.js';
import { SchedulerClient } from '../scheduler/scheduler-client.js';
import type { AgentContext } from './agent-context.js';
import { watchInstanceMetadata, type MetadataWatcherConfig } from './metadata-watcher.js';
import { SessionReporter } from './session-reports.js';

export interface SchedulerLinkConfig {
  url: string;
  token: string;
  /** This node as the scheduler should know it; the agent's URL and token are added. */
  node: Omit<NodeRegistration, 'agentUrl' | 'agentToken'>;
  /** Default 5 s. */
  pushIntervalMs: number;
  /** The URL the scheduler's workers reach this agent at (default: the URL it listens on). */
  advertiseUrl?: string;
  /** Watch the instance metadata service for spot and rebalance notices and pass them on. */
  metadata?: MetadataWatcherConfig;
}

export interface SchedulerLink {
  /** Pushes now (tests, and right after a change worth telling). */
  pushNow(): Promise<void>;
  stop(): void;
}

/**
 * Keeps the scheduler told about this node: registers it, then pushes every
 * session's metrics on an interval. A scheduler that does not know the node
 * (its Redis was emptied) gets a fresh registration. Failures are logged once
 * until the next success, never fatal: sessions run without a scheduler.
 */
export function linkToScheduler(ctx: AgentContext, agentUrl: string, cfg: SchedulerLinkConfig, log: Logger): SchedulerLink {
  const client = new SchedulerClient(cfg.url, cfg.token, 10_000);
  const reg: NodeRegistration = { ...cfg.node, agentUrl: cfg.advertiseUrl ?? agentUrl, agentToken: ctx.config.token };
  const reporter = new SessionReporter(ctx.registry);
  let registered = false;
  let failing = false;
  let stopped = false;
  // The push fields the scheduler last said it ignored: warned about when they change, not every push.
  let ignoredInPush = '';

  let pushing: Promise<void> | undefined;
  const push = async (): Promise<void> => {
    try {
      if (!registered) {
        const { ignoredFields } = await client.register(reg);
        registered = true;
        log.info({ scheduler: cfg.url, node: reg.name }, 'registered with the scheduler');
        if (ignoredFields?.length) log.warn({ scheduler: cfg.url, ignoredFields }, 'the scheduler is older than this agent and ignored some of its fields: upgrade the scheduler');
      }
      const { ignoredFields = [] } = await client.pushMetrics(reg.name, { at: new Date().toISOString(), sessions: await reporter.reports() });
      if (ignoredFields.join() !== ignoredInPush) {
        ignoredInPush = ignoredFields.join();
        if (ignoredFields.length) log.warn({ scheduler: cfg.url, ignoredFields }, 'the scheduler is older than this agent and ignored some fields of its metrics: upgrade the scheduler');
      }
      if (failing) log.info({ scheduler: cfg.url }, 'scheduler reachable again');
      failing = false;
    } catch (err) {
      if (err instanceof UpstreamError && err.status === 404) registered = false;
      if (!failing) log.warn({ scheduler: cfg.url, err: errorMessage(err) }, 'cannot reach the scheduler; retrying every push interval');
      failing = true;
    }
  };
  const pushNow = (): Promise<void> => (pushing ??= push().finally(() => (pushing = undefined)));
  const tick = (): void => {
    if (stopped) return;
    void pushNow().finally(() => {
      if (!stopped) timer = setTimeout(tick, cfg.pushIntervalMs);
    });
  };
  let timer: NodeJS.Timeout = setTimeout(tick, 0);
  const watcher = cfg.metadata
    ? watchInstanceMetadata(
        cfg.metadata,
        reg.name,
        async (n) => {
          await client.notice(n);
        },
        log,
      )
    : undefined;
  return {
    pushNow,
    stop() {
      stopped = true;
      clearTimeout(timer);
      watcher?.stop();
    },
  };
}
