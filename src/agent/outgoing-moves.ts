import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { Session } from '../core/session.js';
import { readJsonRecords, removeJsonRecord, writeJsonRecord } from '../util/fs.js';
import { killQuietly } from '../util/proc.js';

/**
 * A post-copy move past its commit: the session runs on the target, while
 * here criu (`criuPid`) still serves its memory and holds its frozen
 * processes (`sessionPid`, the PID namespace's init). Kept on disk until
 * criu exits, so whoever tears this node down (stopEverySession, a local
 * test host's removal) can end both by pid after the agent is gone.
 */
export const OutgoingMove = z.object({
  sessionId: z.string(),
  criuPid: z.number().int().positive(),
  sessionPid: z.number().int().positive(),
  target: z.string(),
  /**
   * The target agent's token: after a restart this agent asks the target
   * whether it holds every page before taking back a copy that criu let run
   * (absent from older agents' records; then the copy is taken back).
   */
  targetToken: z.string().optional(),
  /** The session as it was frozen, and its dump's work directory: enough to take it back after an agent restart. */
  session: Session,
  work: z.string(),
});
export type OutgoingMove = z.infer<typeof OutgoingMove>;

const dirOf = (dataDir: string): string => join(dataDir, 'outgoing');

export async function recordOutgoing(dataDir: string, m: OutgoingMove): Promise<void> {
  await writeJsonRecord(join(dirOf(dataDir), `${m.sessionId}.json`), m);
}

export async function forgetOutgoing(dataDir: string, sessionId: string): Promise<void> {
  await removeJsonRecord(join(dirOf(dataDir), `${sessionId}.json`));
}

/** The outgoing moves recorded under `dataDir` (unreadable records are skipped). */
export async function listOutgoing(dataDir: string): Promise<OutgoingMove[]> {
  return readJsonRecords(dirOf(dataDir), OutgoingMove);
}

/**
 * Ends every outgoing move recorded under `dataDir`: the frozen processes
 * first (so criu cannot let them run again), then criu, whose closed
 * connection ends the target's lazy-pages daemon. For teardown only: the
 * sessions' memory on the targets is then incomplete, and they are killed there.
 */
export async function killOutgoing(dataDir: string): Promise<number> {
  const moves = await listOutgoing(dataDir);
  for (const m of moves) {
    killQuietly(m.sessionPid, 'SIGKILL');
    killQuietly(m.criuPid, 'SIGKILL');
  }
  await rm(dirOf(dataDir), { recursive: true, force: true });
  return moves.length;
}
