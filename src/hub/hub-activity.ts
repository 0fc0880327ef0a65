import type { Logger } from 'pino';
import type { HubRoute } from '../core/control.js';
import { errorMessage } from '../core/errors.js';

export interface HubActivityConfig {
  /** The hub's API, e.g. http://127.0.0.1:8081/hub/api. */
  apiUrl: string;
  /** A token with the users:activity scope (jupyterhub_config.py gives hubshift's service one). */
  token: string;
  /** How often what was seen is sent. */
  intervalMs: number;
}

/**
 * Tells JupyterHub when users really used their servers, as the gateway saw
 * it (POST /hub/api/users/NAME/activity), so the hub and any idle culler see
 * the truth while a session is checkpointed or moving and cannot say so itself.
 */
export class HubActivityReporter {
  /** user to (server name to the latest activity). */
  private pending = new Map<string, Map<string, Date>>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: HubActivityConfig,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.config.intervalMs);
    this.timer.unref();
  }

  note(route: Pick<HubRoute, 'user' | 'server'>, at = new Date()): void {
    let servers = this.pending.get(route.user);
    if (!servers) this.pending.set(route.user, (servers = new Map()));
    const before = servers.get(route.server);
    if (!before || before < at) servers.set(route.server, at);
  }

  /** Sends what was seen since the last flush; a user whose post failed is kept for the next one. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const batch = this.pending;
      this.pending = new Map();
      for (const [user, servers] of batch) {
        const latest = new Date(Math.max(...[...servers.values()].map((d) => d.getTime())));
        const body = { last_activity: latest.toISOString(), servers: Object.fromEntries([...servers].map(([name, at]) => [name, { last_activity: at.toISOString() }])) };
        try {
          const res = await fetch(`${this.config.apiUrl.replace(/\/$/, '')}/users/${encodeURIComponent(user)}/activity`, {
            method: 'POST',
            headers: { Authorization: `token ${this.config.token}`, 'Content-Type': 'application/json' },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(10_000),
          });
          if (res.status >= 400 && res.status < 500) {
            // Not worth trying again (no such user, a token without the scope): said once, dropped.
            this.log.warn({ user, status: res.status, answer: (await res.text()).slice(0, 200) }, "the hub refused a user's activity (does hubshift's token have users:activity?)");
            continue;
          }
          if (!res.ok) throw new Error(`the hub answered ${res.status}`);
        } catch (err) {
          this.log.warn({ user, err: errorMessage(err) }, "could not report a user's activity to the hub (is --hub-api-url right, and does the token have users:activity?)");
          for (const [server, at] of servers) this.note({ user, server }, at);
        }
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }
}
