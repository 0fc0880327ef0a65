import { LedgerMinute, type LedgerDay, type LedgerForecast, type LedgerSessionMinute, type LedgerSums, type LedgerTotals } from '../core/ledger.js';
import { forecastMonth, zeroSums } from '../pricing/ledger.js';
import { keys } from './keys.js';
import type { RedisConnection } from './redis.js';

/** Minutes kept at full resolution (3 days); days are kept for a year. */
const MINUTES_KEPT = 3 * 1440;
const DAY_TTL_SECONDS = 400 * 86_400;
const SEP = '|';

const TOTAL_FIELDS: (keyof LedgerTotals)[] = ['actualUsd', 'nodesUsd', 'storeUsd', 'unallocatedUsd', 'onDemandUsd', 'cullingUsd', 'culled'];
const SUM_FIELDS: (keyof LedgerSums)[] = ['actualUsd', 'onDemandUsd', 'cullingUsd', 'savedUsd'];

/**
 * The cost ledger in Redis: each minute's totals in a capped list, and each
 * day's sums in a hash added to atomically (HINCRBYFLOAT), so schedulers
 * sharing the Redis never lose an addition; a claim per minute makes one of
 * them record it.
 */
export class LedgerStore {
  constructor(private readonly redis: RedisConnection) {}

  /** Records one minute; false when another scheduler already did. */
  async record(minute: LedgerMinute, sessions: readonly LedgerSessionMinute[]): Promise<boolean> {
    const claimed = await this.redis.set(keys.ledgerClaim(minute.minute), '1', 'EX', 3600, 'NX');
    if (claimed !== 'OK') return false;
    const date = minute.minute.slice(0, 10);
    const day = keys.ledgerDay(date);
    const incr: [string, number][] = [['minutes', 1]];
    for (const f of TOTAL_FIELDS) incr.push([`t${SEP}${f}`, minute.totals[f]]);
    for (const [p, v] of Object.entries(minute.savingsByPolicy)) incr.push([`p${SEP}${p}`, v]);
    for (const n of minute.nodes) incr.push([`n${SEP}${n.name}`, n.usd]);
    for (const s of sessions) {
      const saved = s.onDemandUsd - s.actualUsd;
      const values: Record<keyof LedgerSums, number> = { actualUsd: s.actualUsd, onDemandUsd: s.onDemandUsd, cullingUsd: s.cullingUsd, savedUsd: saved };
      for (const f of SUM_FIELDS) {
        incr.push([`u${SEP}${s.user}${SEP}${f}`, values[f]]);
        incr.push([`g${SEP}${s.group}${SEP}${f}`, values[f]]);
      }
    }
    const tx = this.redis.multi();
    tx.lpush(keys.ledgerMinutes, JSON.stringify(LedgerMinute.parse(minute)));
    tx.ltrim(keys.ledgerMinutes, 0, MINUTES_KEPT - 1);
    for (const [field, v] of incr) tx.hincrbyfloat(day, field, v);
    tx.expire(day, DAY_TTL_SECONDS);
    tx.sadd(keys.ledgerDays, date);
    await tx.exec();
    return true;
  }

  /**
   * Minutes in [from, to), oldest first. The list is newest first, so it is
   * read a day's worth at a time and no further than an hour before `from`
   * (a minute recorded late by a slow scheduler may sit a little out of order).
   */
  async minutes(from: Date, to: Date): Promise<LedgerMinute[]> {
    const out: LedgerMinute[] = [];
    const f = from.toISOString();
    const t = to.toISOString();
    const stop = new Date(from.getTime() - 3600_000).toISOString();
    for (let start = 0; ; start += 1440) {
      const raw = await this.redis.lrange(keys.ledgerMinutes, start, start + 1439);
      let past = false;
      for (const text of raw) {
        const m = LedgerMinute.safeParse(JSON.parse(text));
        if (!m.success) throw new Error(`Redis holds a malformed ledger minute: ${m.error.issues[0]?.path.join('.')} ${m.error.issues[0]?.message}`);
        if (m.data.minute >= f && m.data.minute < t) out.push(m.data);
        past ||= m.data.minute < stop;
      }
      if (past || raw.length < 1440) return out.sort((a, b) => a.minute.localeCompare(b.minute));
    }
  }

  /** The month so far and at the last 24 hours' rate. */
  async forecast(now: Date): Promise<LedgerForecast> {
    const [days, lastDay] = await Promise.all([this.days(`${now.toISOString().slice(0, 7)}-01`), this.minutes(new Date(now.getTime() - 86_400_000), now)]);
    return forecastMonth(now, days, lastDay);
  }

  async dates(): Promise<string[]> {
    return (await this.redis.smembers(keys.ledgerDays)).sort();
  }

  async day(date: string): Promise<LedgerDay | null> {
    const h = await this.redis.hgetall(keys.ledgerDay(date));
    if (Object.keys(h).length === 0) return null;
    const num = (v: string | undefined): number => (v === undefined ? 0 : Number(v));
    const totals = Object.fromEntries(TOTAL_FIELDS.map((f) => [f, num(h[`t${SEP}${f}`])])) as LedgerTotals;
    const d: LedgerDay = { date, minutes: num(h.minutes), totals, savingsByPolicy: {}, byUser: {}, byGroup: {}, byNode: {} };
    for (const [field, value] of Object.entries(h)) {
      const parts = field.split(SEP);
      const v = Number(value);
      if (parts[0] === 'p') d.savingsByPolicy[parts.slice(1).join(SEP)] = v;
      else if (parts[0] === 'n') d.byNode[parts.slice(1).join(SEP)] = v;
      else if ((parts[0] === 'u' || parts[0] === 'g') && parts.length >= 3) {
        const into = parts[0] === 'u' ? d.byUser : d.byGroup;
        const who = parts.slice(1, -1).join(SEP);
        const f = parts.at(-1) as keyof LedgerSums;
        (into[who] ??= zeroSums())[f] = v;
      }
    }
    return d;
  }

  async days(from?: string, to?: string): Promise<LedgerDay[]> {
    const dates = (await this.dates()).filter((d) => (!from || d >= from) && (!to || d <= to));
    const all = await Promise.all(dates.map((d) => this.day(d)));
    return all.filter((d): d is LedgerDay => d !== null);
  }

  /** Notes the most memory a session was seen to hold; returns it. */
  async peak(sessionId: string, rssBytes: number): Promise<number> {
    const before = Number((await this.redis.hget(keys.ledgerPeak, sessionId)) ?? 0);
    if (rssBytes > before) await this.redis.hset(keys.ledgerPeak, sessionId, String(rssBytes));
    return Math.max(before, rssBytes);
  }
}
