import type { CatalogEntry, PriceTable } from '../core/cloud.js';
import { InputError } from '../core/errors.js';
import { onDemandPrice } from '../pricing/price-table.js';

const GIB = 2 ** 30;

/** Instance shapes the simulator launches from (AWS's published sizes): memory-optimized and general purpose. */
const SHAPES: readonly { name: string; memoryBytes: number; cpus: number; networkGbps: number }[] = [
  { name: 'r6i.large', memoryBytes: 16 * GIB, cpus: 2, networkGbps: 12.5 },
  { name: 'r6i.xlarge', memoryBytes: 32 * GIB, cpus: 4, networkGbps: 12.5 },
  { name: 'r6i.2xlarge', memoryBytes: 64 * GIB, cpus: 8, networkGbps: 12.5 },
  { name: 'm6i.large', memoryBytes: 8 * GIB, cpus: 2, networkGbps: 12.5 },
  { name: 'm6i.xlarge', memoryBytes: 16 * GIB, cpus: 4, networkGbps: 12.5 },
  { name: 'm6i.2xlarge', memoryBytes: 32 * GIB, cpus: 8, networkGbps: 12.5 },
];

/** The zone simulated nodes run in: one spot pool per instance type. */
export const SIM_ZONE = 'us-east-1a';

/**
 * The simulator's catalog: on-demand prices from the shipped price table and
 * spot at a fixed fraction of them (workload-facts: 0.35, sweep 0.25-0.45).
 */
export function simulationCatalog(table: PriceTable, spotPriceFactor: number): CatalogEntry[] {
  if (!(spotPriceFactor > 0 && spotPriceFactor <= 1)) throw new InputError(`--spot-price-factor must be in (0, 1], got ${spotPriceFactor}`);
  return SHAPES.map((s) => {
    const od = onDemandPrice(table, s.name);
    return { ...s, architectures: ['x86_64'], onDemandPricePerHour: od, spotPriceByZone: { [SIM_ZONE]: Number((od * spotPriceFactor).toFixed(4)) } };
  });
}
