import { CapacityRequest, type CatalogEntry, type LaunchCandidate } from '../core/cloud.js';
import { InputError } from '../core/errors.js';

/** Memory a node keeps for itself (OS, agent, page cache for images) before sessions fit. */
export const NODE_RESERVED_BYTES = 1 << 30;

/**
 * Where to launch a node for a request, cheapest first: every type that fits
 * in every zone it has a price for, spot before on-demand when the request
 * falls back. A launch walks this list until one place has capacity.
 */
export function rankCandidates(catalog: readonly CatalogEntry[], request: CapacityRequest, reservedBytes = NODE_RESERVED_BYTES): LaunchCandidate[] {
  const req = CapacityRequest.parse(request);
  const fits = catalog.filter((c) => c.memoryBytes - reservedBytes >= req.memoryBytes && c.cpus >= req.cpus && c.architectures.includes(req.architecture));
  const zoneAllowed = (z: string): boolean => req.zones.length === 0 || req.zones.includes(z);
  const spot: LaunchCandidate[] = [];
  const onDemand: LaunchCandidate[] = [];
  for (const c of fits) {
    for (const [zone, price] of Object.entries(c.spotPriceByZone)) if (zoneAllowed(zone)) spot.push({ instanceType: c.name, zone, lifecycle: 'spot', pricePerHour: price });
    const zones = req.zones.length ? req.zones : [null];
    for (const zone of zones) onDemand.push({ instanceType: c.name, zone, lifecycle: 'on-demand', pricePerHour: c.onDemandPricePerHour });
  }
  // Ties go to the smaller type (less stranded capacity), then by name for a stable order.
  const size = new Map(catalog.map((c) => [c.name, c.memoryBytes]));
  const byPrice = (a: LaunchCandidate, b: LaunchCandidate): number =>
    a.pricePerHour - b.pricePerHour || (size.get(a.instanceType) ?? 0) - (size.get(b.instanceType) ?? 0) || a.instanceType.localeCompare(b.instanceType) || (a.zone ?? '').localeCompare(b.zone ?? '');
  spot.sort(byPrice);
  onDemand.sort(byPrice);
  const out = req.lifecycle === 'spot' ? spot : req.lifecycle === 'on-demand' ? onDemand : [...spot, ...onDemand];
  if (out.length === 0) {
    const biggest = [...catalog].sort((a, b) => b.memoryBytes - a.memoryBytes)[0];
    throw new InputError(
      `no instance type in the catalog fits ${(req.memoryBytes / 2 ** 30).toFixed(1)} GiB and ${req.cpus} vCPU as ${req.lifecycle}${req.zones.length ? ` in ${req.zones.join(', ')}` : ''}` +
        (biggest ? ` (the largest is ${biggest.name} with ${(biggest.memoryBytes / 2 ** 30).toFixed(0)} GiB, ${(reservedBytes / 2 ** 30).toFixed(1)} GiB kept for the node)` : ' (the catalog is empty)'),
    );
  }
  return out;
}

/** Looks a type up; an unknown one is refused by name. */
export function catalogEntry(catalog: readonly CatalogEntry[], name: string): CatalogEntry {
  const c = catalog.find((e) => e.name === name);
  if (!c) throw new InputError(`unknown instance type ${name}: the catalog has ${catalog.map((e) => e.name).join(', ') || 'no types'}`);
  return c;
}
