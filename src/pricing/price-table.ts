import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { PriceTable } from '../core/cloud.js';
import { InputError, NotFoundError, describeZodIssue, errorMessage } from '../core/errors.js';

/** The table that ships with hubshift (infra/prices). */
export const DEFAULT_PRICE_TABLE = new URL('../../infra/prices/on-demand-us-east-1.yaml', import.meta.url).pathname;

/** Parses a price table (YAML or JSON); a missing, negative or mistyped price is refused with its place named. */
export function parsePriceTable(text: string, where: string): PriceTable {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new InputError(`price table ${where} is not YAML or JSON: ${errorMessage(err)}`);
  }
  const r = PriceTable.safeParse(raw);
  if (!r.success) throw new InputError(`price table ${where} refused: ${describeZodIssue(r.error)}`);
  return r.data;
}

export async function loadPriceTable(path: string = DEFAULT_PRICE_TABLE): Promise<PriceTable> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read price table ${path}: ${errorMessage(err)}`);
  }
  return parsePriceTable(text, path);
}

/** A type's on-demand price; a type the table does not list is an error, never a guess. */
export function onDemandPrice(table: PriceTable, instanceType: string): number {
  const p = table.onDemand[instanceType];
  if (p === undefined) {
    throw new NotFoundError(`the price table (${table.region}, taken ${table.takenAt}) has no on-demand price for ${instanceType}: add it, or leave the type out of the catalog`);
  }
  return p;
}
