import type { CatalogEntry, PriceTable } from '../core/cloud.js';
import type { InstanceTypeInfo } from '../core/cluster.js';
import { onDemandPrice } from './price-table.js';

/** An instance type's shape as DescribeInstanceTypes gives it (already parsed). */
export interface InstanceShape {
  name: string;
  memoryBytes: number;
  cpus: number;
  networkGbps: number | null;
  architectures: string[];
  spotSupported: boolean;
}

/** The current spot price of one type in one zone. */
export interface SpotQuote {
  instanceType: string;
  zone: string;
  pricePerHour: number;
  at: string;
}

/**
 * Joins the cloud's shapes, the operator's price table and the spot market.
 * Every type described must have an on-demand price: a gap is the operator's
 * to fill, not something to guess.
 */
export function buildCatalog(shapes: readonly InstanceShape[], table: PriceTable, quotes: readonly SpotQuote[]): CatalogEntry[] {
  const latest = new Map<string, SpotQuote>();
  for (const q of quotes) {
    const k = `${q.instanceType} ${q.zone}`;
    const seen = latest.get(k);
    if (!seen || q.at > seen.at) latest.set(k, q);
  }
  return shapes
    .map((s) => {
      const spotPriceByZone: Record<string, number> = {};
      if (s.spotSupported) for (const q of latest.values()) if (q.instanceType === s.name) spotPriceByZone[q.zone] = q.pricePerHour;
      return { name: s.name, memoryBytes: s.memoryBytes, cpus: s.cpus, networkGbps: s.networkGbps, architectures: s.architectures, onDemandPricePerHour: onDemandPrice(table, s.name), spotPriceByZone };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The catalog as the policies see it: one spot price per type (the cheapest zone's). */
export function instanceTypesOf(catalog: readonly CatalogEntry[]): InstanceTypeInfo[] {
  return catalog.map((c) => {
    const spot = Object.values(c.spotPriceByZone);
    return { name: c.name, memoryBytes: c.memoryBytes, cpus: c.cpus, onDemandPricePerHour: c.onDemandPricePerHour, spotPricePerHour: spot.length ? Math.min(...spot) : null };
  });
}
