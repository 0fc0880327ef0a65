import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Whether anything exists at the path (false also when it cannot be looked at). */
export async function pathExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Writes `value` as JSON to `path`, owner-only, whole or not at all (a
 * temporary file renamed over it): a record a restarted agent reads is never
 * one cut short.
 */
export async function writeJsonRecord(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFile(`${path}.tmp`, JSON.stringify(value), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}
