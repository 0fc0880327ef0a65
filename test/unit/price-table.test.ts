import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../../src/pricing/catalog.js';
import { rankCandidates } from '../../src/pricing/choose-instance.js';
import { DEFAULT_PRICE_TABLE, loadPriceTable, onDemandPrice, parsePriceTable } from '../../src/pricing/price-table.js';

const HEAD = 'region: us-east-1\ntakenAt: "2026-11-24"\nsource: test\ncurrency: USD\n';

describe('price tables', () => {
  it('should load the shipped table, with the date it was taken', async () => {
    const t = await loadPriceTable(DEFAULT_PRICE_TABLE);
    expect(t.takenAt).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(onDemandPrice(t, 'r5.xlarge')).toBe(0.252);
  });

  it('should refuse a negative, a missing and a mistyped price, naming the place', () => {
    expect(() => parsePriceTable(`${HEAD}onDemand: {r5.large: -0.1}`, 'prices.yaml')).toThrow(/price table prices.yaml refused: onDemand.r5.large: must be a positive price/);
    expect(() => parsePriceTable(`${HEAD}onDemand: {r5.large: }`, 'prices.yaml')).toThrow(/onDemand.r5.large: must be a number/);
    expect(() => parsePriceTable(`${HEAD}onDemand: {r5.large: "cheap"}`, 'p')).toThrow(/onDemand.r5.large/);
    expect(() => parsePriceTable(`${HEAD}onDemand: {}`, 'p')).toThrow(/lists no prices/);
    expect(() => parsePriceTable(HEAD.replace('takenAt: "2026-11-24"\n', '') + 'onDemand: {r5.large: 0.1}', 'p')).toThrow(/takenAt/);
    expect(() => parsePriceTable(`${HEAD}onDemand: {r5.large: 0.1}\nspot: {}`, 'p')).toThrow(/Unrecognized key.*spot/);
  });

  it('should refuse a type with no price rather than guess', () => {
    const t = parsePriceTable(`${HEAD}onDemand: {r5.large: 0.126}`, 'p');
    expect(() => onDemandPrice(t, 'r5.xlarge')).toThrow(/taken 2026-11-24\) has no on-demand price for r5.xlarge/);
    expect(() => buildCatalog([{ name: 'r5.xlarge', memoryBytes: 2 ** 35, cpus: 4, networkGbps: 10, architectures: ['x86_64'], spotSupported: true }], t, [])).toThrow(/r5.xlarge/);
  });

  it('should rank on-demand per zone when zones are given, and keep spot out of an on-demand request', () => {
    const t = parsePriceTable(`${HEAD}onDemand: {r5.large: 0.126, m5.large: 0.096}`, 'p');
    const cat = buildCatalog(
      [
        { name: 'r5.large', memoryBytes: 16 * 2 ** 30, cpus: 2, networkGbps: 10, architectures: ['x86_64'], spotSupported: true },
        { name: 'm5.large', memoryBytes: 8 * 2 ** 30, cpus: 2, networkGbps: 10, architectures: ['x86_64'], spotSupported: true },
      ],
      t,
      [{ instanceType: 'r5.large', zone: 'us-east-1a', pricePerHour: 0.04, at: '2026-11-24T00:00:00Z' }],
    );
    expect(rankCandidates(cat, { memoryBytes: 4 * 2 ** 30, cpus: 1, lifecycle: 'on-demand', zones: ['us-east-1a', 'us-east-1b'] }).map((c) => `${c.instanceType}@${c.zone}`)).toEqual([
      'm5.large@us-east-1a',
      'm5.large@us-east-1b',
      'r5.large@us-east-1a',
      'r5.large@us-east-1b',
    ]);
    expect(rankCandidates(cat, { memoryBytes: 4 * 2 ** 30, cpus: 1, lifecycle: 'spot-then-on-demand' })[0]).toEqual({ instanceType: 'r5.large', zone: 'us-east-1a', lifecycle: 'spot', pricePerHour: 0.04 });
    expect(() => rankCandidates(cat, { memoryBytes: 4 * 2 ** 30, cpus: 1, lifecycle: 'spot', architecture: 'arm64' })).toThrow(/no instance type in the catalog fits/);
  });
});
