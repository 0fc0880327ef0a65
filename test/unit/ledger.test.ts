import { describe, expect, it } from 'vitest';
import { forecastMonth, ledgerMinute, PLACEMENT, sumDays, UNUSED_CAPACITY, type LedgerInput, type LedgerSessionInput } from '../../src/pricing/ledger.js';
import { storeCostPerHour } from '../../src/pricing/session-cost.js';

const GiB = 2 ** 30;
const AT = new Date('2026-11-24T10:00:00Z');

function session(over: Partial<LedgerSessionInput>): LedgerSessionInput {
  return { id: 's00000001', user: 'ann', group: 'astro', node: 'spot-a', state: 'running', requestedBytes: null, peakRssBytes: 4 * GiB, lastActivityAt: '2026-11-24T09:59:00Z', cause: null, ...over };
}

const input = (sessions: LedgerSessionInput[]): LedgerInput => ({
  minute: AT,
  nodes: [
    { name: 'spot-a', instanceType: 'r5.large', lifecycle: 'spot', pricePerHour: 0.06, memoryBytes: 16 * GiB },
    { name: 'od-b', instanceType: 'r5.xlarge', lifecycle: 'on-demand', pricePerHour: 0.252, memoryBytes: 32 * GiB },
  ],
  instanceTypes: [{ name: 'r5.large', memoryBytes: 16 * GiB, onDemandPricePerHour: 0.126 }],
  sessions,
  cullAfterMs: 3600_000,
});

describe('the cost ledger', () => {
  it('should price nodes, shares, the store and both baselines, and put savings down to their causes', () => {
    const r = ledgerMinute(
      input([
        session({ id: 's0000000a' }),
        session({ id: 's0000000b', user: 'bob', group: null, node: null, state: 'checkpointed', peakRssBytes: 2 * GiB, lastActivityAt: '2026-11-24T07:00:00Z', cause: { policy: 'idle', action: 'checkpoint', operation: 'o1' } }),
        session({ id: 's0000000c', user: 'cy', node: 'od-b', requestedBytes: 8 * GiB, peakRssBytes: 1 * GiB, lastActivityAt: '2026-11-24T08:59:30Z', cause: { policy: 'rightsize', action: 'migrate', operation: 'o2' } }),
      ]),
    );
    const rate = 0.126 / (16 * GiB); // the cheapest on-demand USD per byte-hour
    const [a, b, c] = r.sessions;
    expect(a!.actualUsd).toBeCloseTo((0.06 * 4) / 16 / 60, 12);
    expect(a!.onDemandUsd).toBeCloseTo((4 * GiB * rate) / 60, 12);
    expect(b!.actualUsd).toBeCloseTo(storeCostPerHour(2 * GiB) / 60, 12);
    expect(b!.group).toBe('ungrouped');
    // Idle 3 h: culling would have killed it long ago; idle 61 min: killed this very minute.
    expect(b!.cullingUsd).toBe(0);
    expect(c!.bytes).toBe(8 * GiB);
    expect(c!.cullingUsd).toBe(0);
    expect(r.minute.totals.culled).toBe(1);
    expect(r.minute.totals.nodesUsd).toBeCloseTo((0.06 + 0.252) / 60, 12);
    expect(r.minute.totals.actualUsd).toBeCloseTo(r.minute.totals.nodesUsd + r.minute.totals.storeUsd, 12);
    expect(Object.keys(r.minute.savingsByPolicy).sort()).toEqual(['idle', PLACEMENT, 'rightsize', UNUSED_CAPACITY].sort());
    const saved = Object.values(r.minute.savingsByPolicy).reduce((x, y) => x + y, 0);
    expect(saved).toBeCloseTo(r.minute.totals.onDemandUsd - r.minute.totals.actualUsd, 12);
  });

  it('should never charge sessions more than their node when it is overcommitted', () => {
    const r = ledgerMinute(input([session({ id: 's0000000a', peakRssBytes: 12 * GiB }), session({ id: 's0000000b', peakRssBytes: 12 * GiB })]));
    expect(r.sessions[0]!.actualUsd + r.sessions[1]!.actualUsd).toBeCloseTo(0.06 / 60, 12);
    expect(r.minute.totals.unallocatedUsd).toBeCloseTo(0.252 / 60, 12);
  });

  it('should add minutes into days by user and group, and forecast the month at the last day\'s rate', () => {
    const minutes = [0, 1, 2].map((i) => ledgerMinute({ ...input([session({ id: 's0000000a' }), session({ id: 's0000000b', user: 'bob', group: 'astro' })]), minute: new Date(AT.getTime() + i * 60_000) }));
    const [day] = sumDays(minutes);
    expect(day!.minutes).toBe(3);
    expect(day!.byGroup.astro!.actualUsd).toBeCloseTo(day!.byUser.ann!.actualUsd + day!.byUser.bob!.actualUsd, 12);
    expect(day!.byNode['spot-a']).toBeCloseTo((3 * 0.06) / 60, 12);
    const f = forecastMonth(new Date('2026-11-30T00:00:00Z'), [day!], minutes.map((m) => m.minute));
    expect(f.hoursLeft).toBe(24);
    expect(f.ratePerHour.actualUsd).toBeCloseTo(day!.totals.actualUsd * 20, 12);
    expect(f.forecast.actualUsd).toBeCloseTo(day!.totals.actualUsd + f.ratePerHour.actualUsd * 24, 12);
    expect(forecastMonth(new Date('2026-12-01T00:00:00Z'), [day!], []).monthToDate.actualUsd).toBe(0);
  });
});
