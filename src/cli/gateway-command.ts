import type { Command } from 'commander';
import { pino } from 'pino';
import { InputError } from '../core/errors.js';
import { GATEWAY_DEFAULTS, HUB_ACTIVITY_DEFAULT_MS, type GatewayConfig } from '../hub/gateway-config.js';
import type { HubActivityConfig } from '../hub/hub-activity.js';
import { integer, port, positiveNumber, stopOnSignal } from './args.js';
import { readTokenFile } from './token-file.js';

export interface GatewayCliOpts {
  holdTimeout: number;
  maxHeld: number;
  hubApiUrl?: string;
  hubTokenFile?: string;
  activityInterval: number;
}

/** The gateway's options, shared by `hubshift gateway` and `hubshift scheduler --gateway-port`. */
export function withGatewayOptions(cmd: Command): Command {
  return cmd
    .option('--hold-timeout <seconds>', 'how long a request or websocket waits for a moving or waking session', positiveNumber('--hold-timeout'), GATEWAY_DEFAULTS.holdTimeoutMs / 1000)
    .option('--max-held <n>', 'requests waiting at once; past it new ones get 503', integer('--max-held', 1), GATEWAY_DEFAULTS.maxHeld)
    .option('--hub-api-url <url>', "JupyterHub's API (e.g. http://127.0.0.1:8081/hub/api): users' activity seen by the gateway is reported there, and a sleeping session wakes only for a request whose hub token may use it (without it, any request wakes one)")
    .option('--hub-token-file <file>', "a hub token with the users:activity scope (jupyterhub_config.py gives hubshift's service the scheduler's token)")
    .option('--activity-interval <seconds>', 'how often activity is reported to the hub', positiveNumber('--activity-interval'), HUB_ACTIVITY_DEFAULT_MS / 1000);
}

export function gatewayConfig(o: GatewayCliOpts, host: string, listenPort: number): GatewayConfig {
  return { ...GATEWAY_DEFAULTS, host, port: listenPort, holdTimeoutMs: o.holdTimeout * 1000, maxHeld: Math.round(o.maxHeld) };
}

/** The hub to report activity to, when --hub-api-url is given (its token defaults to the scheduler's). */
export async function hubActivityConfig(o: GatewayCliOpts, schedulerTokenFile: string): Promise<HubActivityConfig | undefined> {
  if (!o.hubApiUrl) {
    if (o.hubTokenFile) throw new InputError('--hub-token-file needs --hub-api-url');
    return undefined;
  }
  if (!/^https?:\/\//.test(o.hubApiUrl)) throw new InputError(`--hub-api-url ${o.hubApiUrl} is not an http(s) URL`);
  return { apiUrl: o.hubApiUrl, token: await readTokenFile(o.hubTokenFile ?? schedulerTokenFile), intervalMs: o.activityInterval * 1000 };
}

export function registerGatewayCommand(program: Command): void {
  withGatewayOptions(
    program
      .command('gateway')
      .description("run the session gateway on its own: JupyterHub's proxy sends /user/NAME/ here and it sends each request on to wherever the session is now, holding requests while a session moves or wakes")
      .requiredOption('--scheduler <url>', 'the scheduler whose sessions it serves, e.g. http://127.0.0.1:7300')
      .requiredOption('--token-file <file>', "file holding the scheduler's bearer token")
      .option('--port <port>', 'HTTP port (0 picks a free one)', port, GATEWAY_DEFAULTS.port)
      .option('--host <address>', 'address to listen on (where the hub\'s proxy reaches it)', GATEWAY_DEFAULTS.host)
      .option('--log-level <level>', 'pino log level', 'info'),
  ).action(async (o: GatewayCliOpts & { scheduler: string; tokenFile: string; port: number; host: string; logLevel: string }) => {
    // Loaded here, not at the top: every other command starts without it (see main.ts).
    const { startGateway } = await import('../hub/start-gateway.js');
    const g = await startGateway(
      { config: gatewayConfig(o, o.host, o.port), scheduler: { url: o.scheduler, token: await readTokenFile(o.tokenFile) }, hub: await hubActivityConfig(o, o.tokenFile) },
      pino({ name: 'hubshift-gateway', level: o.logLevel }),
    );
    process.stderr.write(`hubshift gateway listening on ${g.url}\n`);
    stopOnSignal(() => g.close());
  });
}
