import type { Logger } from 'pino';
import type { NodeRegistration, SessionReport } from '../core/control.js';
import { UpstreamError, errorMessage } from '../core/errors.js';
import { sessionUrl } from '../core/session.js';
import { SchedulerClient } from '../scheduler/scheduler-client.js';
import type { AgentContext } from './agent-context.js';
import { watchInstanceMetadata, type MetadataWatcherConfig } from './metadata-watcher.js';
import { sampleSession } from './metrics.js';

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

function isoOrNull(t: string | null): string | null {
  if (!t) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
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
  const cpu = new Map<string, { at: number; seconds: number }>();
  let registered = false;
  let failing = false;
  let stopped = false;

  const report = async (): Promise<SessionReport[]> =>
    Promise.all(
      ctx.registry.list().map(async (s) => {
        const m = await sampleSession(s);
        // The state as it is once sampled: a move committed meanwhile must not be pushed as still restoring.
        const state = ctx.registry.find(s.id)?.state ?? s.state;
        const at = Date.parse(m.at);
        const prev = cpu.get(s.id);
        cpu.set(s.id, { at, seconds: m.cpuSeconds });
        const cores = prev && at > prev.at ? Math.max(0, (m.cpuSeconds - prev.seconds) / ((at - prev.at) / 1000)) : 0;
        return {
          id: s.id,
          user: s.user,
          state,
          url: sessionUrl(s),
          token: s.token,
          rssBytes: m.rssBytes,
          cpuCores: cores,
          busy: m.kernels.some((k) => k.busy),
          connections: m.connections,
          lastActivityAt: isoOrNull(m.lastActivity),
          lastCheckpoint: s.lastCheckpoint,
        };
      }),
    );

  let pushing: Promise<void> | undefined;
  const push = async (): Promise<void> => {
    try {
      if (!registered) {
        await client.register(reg);
        registered = true;
        log.info({ scheduler: cfg.url, node: reg.name }, 'registered with the scheduler');
      }
      await client.pushMetrics(reg.name, { at: new Date().toISOString(), sessions: await report() });
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
