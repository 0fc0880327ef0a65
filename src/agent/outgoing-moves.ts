import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
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
});
export type OutgoingMove = z.infer<typeof OutgoingMove>;

const dirOf = (dataDir: string): string => join(dataDir, 'outgoing');

export async function recordOutgoing(dataDir: string, m: OutgoingMove): Promise<void> {
  await mkdir(dirOf(dataDir), { recursive: true, mode: 0o700 });
  await writeFile(join(dirOf(dataDir), `${m.sessionId}.json`), JSON.stringify(m), { mode: 0o600 });
}

export async function forgetOutgoing(dataDir: string, sessionId: string): Promise<void> {
  await rm(join(dirOf(dataDir), `${sessionId}.json`), { force: true });
}

/**
 * Ends every outgoing move recorded under `dataDir`: the frozen processes
 * first (so criu cannot let them run again), then criu, whose closed
 * connection ends the target's lazy-pages daemon. For teardown only: the
 * sessions' memory on the targets is then incomplete, and they are killed there.
 */
export async function killOutgoing(dataDir: string): Promise<number> {
  const names = await readdir(dirOf(dataDir)).catch(() => [] as string[]);
  for (const n of names) {
    const m = OutgoingMove.safeParse(JSON.parse(await readFile(join(dirOf(dataDir), n), 'utf8').catch(() => 'null')));
    if (m.success) {
      killQuietly(m.data.sessionPid, 'SIGKILL');
      killQuietly(m.data.criuPid, 'SIGKILL');
    }
    await rm(join(dirOf(dataDir), n), { force: true });
  }
  return names.length;
}
