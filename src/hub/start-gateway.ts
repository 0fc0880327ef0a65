import type { Logger } from 'pino';
import { SchedulerClient } from '../scheduler/scheduler-client.js';
import { SessionGateway } from './gateway.js';
import type { GatewayConfig } from './gateway-config.js';
import { HubActivityReporter, type HubActivityConfig } from './hub-activity.js';
import { HubIdentity } from './hub-identity.js';
import { SchedulerDirectory } from './session-directory.js';

export interface GatewayOptions {
  config: GatewayConfig;
  /** The scheduler whose sessions the gateway serves. */
  scheduler: { url: string; token: string };
  /**
   * The hub: users' activity is reported to its API, and a sleeping session wakes only for a request whose token
   * the hub says may use it. Unset: nothing is reported, and any request wakes a session.
   */
  hub?: HubActivityConfig;
}

export interface RunningGateway {
  url: string;
  gateway: SessionGateway;
  activity: HubActivityReporter | null;
  close(): Promise<void>;
}

/** A session gateway serving one scheduler's hub sessions, listening. */
export async function startGateway(opts: GatewayOptions, log: Logger): Promise<RunningGateway> {
  const activity = opts.hub ? new HubActivityReporter(opts.hub, log) : null;
  const identity = opts.hub ? new HubIdentity(opts.hub.apiUrl, log) : null;
  if (!identity) log.warn("the gateway has no hub API (--hub-api-url): it cannot ask who sends a request, so any request wakes a sleeping session");
  const gateway = new SessionGateway(new SchedulerDirectory(new SchedulerClient(opts.scheduler.url, opts.scheduler.token, 15_000)), opts.config, log, activity, identity);
  const url = await gateway.listen();
  activity?.start();
  log.info({ url, hub: opts.hub?.apiUrl ?? null }, 'session gateway listening');
  return {
    url,
    gateway,
    activity,
    close: async () => {
      await gateway.close();
      await activity?.close();
    },
  };
}
