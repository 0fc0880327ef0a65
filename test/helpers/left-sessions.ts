import type { AgentClient } from '../../src/agent/agent-client.js';

/**
 * Removes every session still on these agents: after each test of a file
 * whose tests share hosts, so that one that failed midway (its session left
 * on whichever host it reached) does not fail the next with its address or
 * its processes. Returns the ids removed; a removal that fails is left to
 * the hosts' own removal at the file's end.
 */
export async function removeLeftSessions(clients: readonly AgentClient[]): Promise<string[]> {
  const removed: string[] = [];
  for (const c of clients) {
    const left = await c.listSessions().catch(() => []);
    for (const s of left) {
      if (await c.removeSession(s.id).then(() => true, () => false)) removed.push(s.id);
    }
  }
  return removed;
}
