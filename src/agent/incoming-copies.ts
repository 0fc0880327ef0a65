import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MoveManifest } from '../core/checkpoint.js';
import { readJsonRecords, removeJsonRecord, writeJsonRecord } from '../util/fs.js';
import { isAlive, killQuietly } from '../util/proc.js';
import { restoredServerPid } from './sandbox.js';

/**
 * A session being moved in: written before criu restore starts, so that an
 * agent killed inside the restore (which criu finishes without it) leaves
 * enough on disk to settle the copy: where the restore ran (`work`, whose
 * pid file names the copy, see restoredPidFile), what the source sent, and
 * the copy's guard. `committed` once the source has let go: from then on
 * the copy here is the session's only one. Forgotten when the move in ends.
 */
export const IncomingCopy = z.object({
  sessionId: z.string(),
  work: z.string(),
  manifest: MoveManifest,
  guardPid: z.number().int().positive().nullable(),
  committed: z.boolean(),
});
export type IncomingCopy = z.infer<typeof IncomingCopy>;

const dirOf = (dataDir: string): string => join(dataDir, 'incoming');
const pathOf = (dataDir: string, sessionId: string): string => join(dirOf(dataDir), `${sessionId}.json`);

/** The images of a move in, inside its work directory. */
export const incomingImages = (work: string): string => join(work, 'images');

export async function recordIncoming(dataDir: string, c: IncomingCopy): Promise<void> {
  await writeJsonRecord(pathOf(dataDir, c.sessionId), c);
}

export async function forgetIncoming(dataDir: string, sessionId: string): Promise<void> {
  await removeJsonRecord(pathOf(dataDir, sessionId));
}

/** The moves in recorded under `dataDir` (unreadable records are skipped). */
export async function listIncoming(dataDir: string): Promise<IncomingCopy[]> {
  return readJsonRecords(dirOf(dataDir), IncomingCopy);
}

/**
 * For teardown only: kills every moved-in copy recorded under `dataDir` (by
 * the pid its restore wrote, if that is still the session's server) and its
 * guard, and forgets them.
 */
export async function killIncomingCopies(dataDir: string): Promise<number> {
  const copies = await listIncoming(dataDir);
  for (const c of copies) {
    if (c.guardPid !== null) await stopIncomingGuard(c.guardPid, c.work);
    const pid = await restoredServerPid(incomingImages(c.work), c.sessionId);
    if (pid !== null) killQuietly(pid, 'SIGKILL');
  }
  await rm(dirOf(dataDir), { recursive: true, force: true });
  return copies.length;
}

/**
 * Stops the guard of the move in at `work` (startIncomingGuard) before it
 * fires; false when it had already fired (or ended). Only a process whose
 * script names `work` is killed: the pid may come from an old record.
 */
export async function stopIncomingGuard(pid: number, work: string): Promise<boolean> {
  if (!(await isAlive(pid))) return false;
  // Synchronously: a commit does this before the moved-in copy may run (see writeJsonRecord).
  let cmd = '';
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    /* gone meanwhile */
  }
  if (!cmd.includes(work)) return false;
  killQuietly(pid, 'SIGKILL');
  return true;
}
