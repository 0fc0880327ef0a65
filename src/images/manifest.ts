import { CheckpointManifest } from '../core/checkpoint.js';
import { IntegrityError, describeZodIssue } from '../core/errors.js';

/** A manifest's text as a store returned it, validated: every store reports a bad one the same way. */
export function parseManifest(id: string, text: string, location: string): CheckpointManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new IntegrityError(`checkpoint ${id}'s manifest in ${location} is not valid JSON`);
  }
  const parsed = CheckpointManifest.safeParse(json);
  if (!parsed.success) {
    throw new IntegrityError(`checkpoint ${id}'s manifest in ${location} is invalid at ${describeZodIssue(parsed.error)}`);
  }
  if (parsed.data.id !== id) throw new IntegrityError(`manifest in ${location}/${id} names checkpoint ${parsed.data.id}`);
  return parsed.data;
}
