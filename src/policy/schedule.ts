import { Cron } from 'croner';

/**
 * Whether a cron schedule had a run in (lastRun, now]. Without a last run the
 * window is the minute before now, so a fresh scheduler does not replay the
 * past.
 */
const crons = new Map<string, Cron>();

export function scheduleFired(expr: string, timezone: string, lastRun: string | undefined, now: Date): boolean {
  const from = lastRun ? new Date(lastRun) : new Date(now.getTime() - 60_000);
  // Parsed once per expression and zone: every pass asks again.
  const key = `${timezone} ${expr}`;
  let cron = crons.get(key);
  if (!cron) {
    cron = new Cron(expr, { timezone, paused: true });
    crons.set(key, cron);
  }
  const next = cron.nextRun(from);
  return next !== null && next.getTime() <= now.getTime();
}

/** The scheduled policies (enabled, with a schedule) whose schedule fired in (lastRun, now]. */
export function duePolicies(policies: readonly { name: string; enabled: boolean; schedule?: string; timezone?: string }[], lastRuns: Record<string, string>, now: Date): string[] {
  return policies.filter((p) => p.enabled && p.schedule !== undefined && scheduleFired(p.schedule, p.timezone ?? 'UTC', lastRuns[p.name], now)).map((p) => p.name);
}
