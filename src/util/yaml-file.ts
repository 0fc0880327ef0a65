import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { InputError, describeZodIssue, errorMessage } from '../core/errors.js';

/** Parses YAML (or JSON) text against a schema; `what` names it in the error (e.g. "price table prices.yaml"). */
export function parseYamlAs<T>(text: string, schema: z.ZodType<T>, what: string): T {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new InputError(`${what} is not YAML or JSON: ${errorMessage(err)}`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new InputError(`${what} refused: ${describeZodIssue(r.error)}`);
  return r.data;
}

/** Reads a YAML (or JSON) file and parses it against a schema; every failure is an InputError naming `what` and the path. */
export async function loadYamlAs<T>(path: string, schema: z.ZodType<T>, what: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read ${what} ${path}: ${errorMessage(err)}`);
  }
  return parseYamlAs(text, schema, `${what} ${path}`);
}
