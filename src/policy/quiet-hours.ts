import type { Guards } from './policy-schema.js';

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

// Building a formatter costs far more than using one; a scheduler (and the simulator, every simulated minute) asks for the same few zones.
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Day and minute of the day at `now` in a time zone. */
function localClock(now: Date, timeZone: string): { day: string; minute: number } {
  if (timeZone === 'UTC') return { day: DAYS[now.getUTCDay()] as string, minute: now.getUTCHours() * 60 + now.getUTCMinutes() };
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(timeZone, f);
  }
  const parts = f.formatToParts(now);
  const get = (t: string): string => parts.find((p) => p.type === t)?.value ?? '';
  const day = get('weekday').toLowerCase().slice(0, 3);
  return { day: DAYS.includes(day as (typeof DAYS)[number]) ? day : 'sun', minute: Number(get('hour')) * 60 + Number(get('minute')) };
}

function minutes(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return h * 60 + m;
}

/** Whether `now` falls in a quiet window [start, end) on one of its days; a window past midnight belongs to its start day. */
export function inQuietHours(windows: Guards['quietHours'], now: Date): boolean {
  return windows.some((w) => {
    const { day, minute } = localClock(now, w.timezone);
    const start = minutes(w.start);
    const end = minutes(w.end);
    const days = w.days as string[];
    if (start <= end) return days.includes(day) && minute >= start && minute < end;
    const yesterday = DAYS[(DAYS.indexOf(day as (typeof DAYS)[number]) + 6) % 7] as string;
    return (days.includes(day) && minute >= start) || (days.includes(yesterday) && minute < end);
  });
}
