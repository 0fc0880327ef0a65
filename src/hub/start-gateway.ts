import type { Logger } from 'pino';
import { SchedulerClient } from '../scheduler/scheduler-client.js';
import { SessionGateway } from './gateway.js';
import type { GatewayConfig } from './gateway-config.js';
import { HubActivityReporter, type HubActivityConfig } from './hub-activity.js';
import { SchedulerDirectory } from './session-directory.js';

export interface GatewayOptions {
  config: GatewayConfig;
  /** The scheduler whose sessions the gateway serves. */
  scheduler: { url: string; token: string };
  /** Report users' activity to the hub; unset: nothing is reported. */
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
  const gateway = new SessionGateway(new SchedulerDirectory(new SchedulerClient(opts.scheduler.url, opts.scheduler.token, 15_000)), opts.config, log, activity);
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
