import { Cron } from 'croner';

/** A parsed schedule and its last answer: passes ask again every minute with the same last run, and croner's nextRun cost a simulated month seconds. */
interface Schedule {
  cron: Cron;
  from: number;
  next: number | null;
}
const schedules = new Map<string, Schedule>();

/**
 * Whether a cron schedule had a run in (lastRun, now]. Without a last run the
 * window is the minute before now, so a fresh scheduler does not replay the
 * past.
 */
export function scheduleFired(expr: string, timezone: string, lastRun: string | undefined, now: Date): boolean {
  const from = lastRun ? Date.parse(lastRun) : now.getTime() - 60_000;
  const key = `${timezone} ${expr}`;
  let s = schedules.get(key);
  if (!s) {
    s = { cron: new Cron(expr, { timezone, paused: true }), from: NaN, next: null };
    schedules.set(key, s);
  }
  if (s.from !== from) {
    s.next = s.cron.nextRun(new Date(from))?.getTime() ?? null;
    s.from = from;
  }
  return s.next !== null && s.next <= now.getTime();
}

/** The scheduled policies (enabled, with a schedule) whose schedule fired in (lastRun, now]. */
export function duePolicies(policies: readonly { name: string; enabled: boolean; schedule?: string; timezone?: string }[], lastRuns: Record<string, string>, now: Date): string[] {
  return policies.filter((p) => p.enabled && p.schedule !== undefined && scheduleFired(p.schedule, p.timezone ?? 'UTC', lastRuns[p.name], now)).map((p) => p.name);
}
