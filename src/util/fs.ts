import { mkdirSync, renameSync, rmSync, write, writeFileSync, writeSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { z } from 'zod';

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
 * one cut short. Synchronously: a record is a few hundred bytes into the page
 * cache (0.1 ms); through libuv's pool each of its three steps waited for a
 * thread, and a move's records and session state took 3-15 ms of its frozen
 * window here when both cores were busy.
 */
export async function writeJsonRecord(path: string, value: unknown, indent?: number): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(`${path}.tmp`, JSON.stringify(value, null, indent), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** Removes the record at `path`, synchronously as writeJsonRecord writes it; a missing one is no error. */
export async function removeJsonRecord(path: string): Promise<void> {
  rmSync(path, { force: true });
}

/** The record writeJsonRecord wrote at `path`, parsed with `schema`; null when it is missing, cut short or of another shape. */
export async function readJsonRecord<T>(path: string, schema: z.ZodType<T>): Promise<T | null> {
  const text = await readFile(path, 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    const r = schema.safeParse(JSON.parse(text));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

/** Every record (NAME.json) in `dir` that readJsonRecord can read; none when `dir` is missing. */
export async function readJsonRecords<T>(dir: string, schema: z.ZodType<T>): Promise<T[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  const records = await Promise.all(names.map((n) => readJsonRecord(join(dir, n), schema)));
  return records.filter((r): r is Awaited<T> => r !== null);
}

/** writeAt, synchronously: all of `buf` to `fd` at `position`, however many writes that takes. */
export function writeAtSync(fd: number, buf: Buffer, position: number): void {
  for (let at = 0; at < buf.length; ) at += writeSync(fd, buf, at, buf.length - at, position + at);
}

/** Writes `length` bytes of `buf` to `fd` at `position`, however many writes that takes. */
export function writeAt(fd: number, buf: Buffer, length: number, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const more = (at: number): void =>
      write(fd, buf, at, length - at, position + at, (err, n) => {
        if (err) reject(err);
        else if (at + n < length) more(at + n);
        else resolve();
      });
    more(0);
  });
}
