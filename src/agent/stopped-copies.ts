import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { readJsonRecord, readJsonRecords, removeJsonRecord, writeJsonRecord } from '../util/fs.js';
import { killQuietly } from '../util/proc.js';

/**
 * A stop-and-copy move under way leaves the session's processes stopped
 * here (criu's --leave-stopped) until the target runs it. Recorded from the
 * dump to the end of the move, so that whoever tears this node down can end
 * them by pid after the agent is gone, and marked `committing` just before
 * the commit is sent: an agent restarted before the copy here was settled
 * then kills it instead of resuming it, since the target either runs the
 * session (the commit arrived) or keeps its verified copy in its store after
 * its commit timeout (it did not).
 */
export const StoppedCopy = z.object({
  sessionId: z.string(),
  /** The session's PID-namespace init here. */
  sessionPid: z.number().int().positive(),
  target: z.string(),
  committing: z.boolean(),
});
export type StoppedCopy = z.infer<typeof StoppedCopy>;

const dirOf = (dataDir: string): string => join(dataDir, 'stopped');
const pathOf = (dataDir: string, sessionId: string): string => join(dirOf(dataDir), `${sessionId}.json`);

export async function recordStoppedCopy(dataDir: string, m: StoppedCopy): Promise<void> {
  await writeJsonRecord(pathOf(dataDir, m.sessionId), m);
}

export async function forgetStoppedCopy(dataDir: string, sessionId: string): Promise<void> {
  await removeJsonRecord(pathOf(dataDir, sessionId));
}

/** The record of session `sessionId`'s stopped copy here, or null. */
export async function findStoppedCopy(dataDir: string, sessionId: string): Promise<StoppedCopy | null> {
  return readJsonRecord(pathOf(dataDir, sessionId), StoppedCopy);
}

/** For teardown only: kills every stopped copy recorded under `dataDir` by pid, and forgets them. */
export async function killStoppedCopies(dataDir: string): Promise<number> {
  const copies = await readJsonRecords(dirOf(dataDir), StoppedCopy);
  for (const m of copies) killQuietly(m.sessionPid, 'SIGKILL');
  await rm(dirOf(dataDir), { recursive: true, force: true });
  return copies.length;
}
