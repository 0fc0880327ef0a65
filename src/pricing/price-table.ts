import { PriceTable } from '../core/cloud.js';
import { NotFoundError } from '../core/errors.js';
import { loadYamlAs, parseYamlAs } from '../util/yaml-file.js';

/** The table that ships with hubshift (infra/prices). */
export const DEFAULT_PRICE_TABLE = new URL('../../infra/prices/on-demand-us-east-1.yaml', import.meta.url).pathname;

/** Parses a price table (YAML or JSON); a missing, negative or mistyped price is refused with its place named. */
export function parsePriceTable(text: string, where: string): PriceTable {
  return parseYamlAs(text, PriceTable, `price table ${where}`);
}

export async function loadPriceTable(path: string = DEFAULT_PRICE_TABLE): Promise<PriceTable> {
  return loadYamlAs(path, PriceTable, 'price table');
}

/** A type's on-demand price; a type the table does not list is an error, never a guess. */
export function onDemandPrice(table: PriceTable, instanceType: string): number {
  const p = table.onDemand[instanceType];
  if (p === undefined) {
    throw new NotFoundError(`the price table (${table.region}, taken ${table.takenAt}) has no on-demand price for ${instanceType}: add it, or leave the type out of the catalog`);
  }
  return p;
}
