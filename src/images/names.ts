import { BlobName, CheckpointId } from '../core/checkpoint.js';
import { InputError } from '../core/errors.js';

/** A checkpoint id checked before it becomes part of a path or key: no traversal out of the store. */
export function safeCheckpointId(id: string): string {
  if (!CheckpointId.safeParse(id).success) throw new InputError(`checkpoint id ${JSON.stringify(id)} is not valid: ids look like c1a2b3c4d5e6f`);
  return id;
}

export function safeBlobName(name: string): string {
  if (!BlobName.safeParse(name).success) throw new InputError(`blob name ${JSON.stringify(name)} is not a plain file name`);
  return name;
}
