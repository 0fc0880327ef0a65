import { join } from 'node:path';
import { z } from 'zod';
import { readJsonRecords, removeJsonRecord, writeJsonRecord } from '../util/fs.js';

/**
 * An address this agent gave a session that has since moved to another
 * agent. A moved session keeps its address (from this agent's pool), but
 * this agent no longer knows the session: without the record it would give
 * the address to the next session it starts, and both would answer for it on
 * the segment (the scheduler's avoidAddresses kept its own starts clear;
 * agents driven by hand were not). Kept until the agent the session went to,
 * or one it moved the session on to, no longer holds it.
 */
export const LentAddress = z.object({
  sessionId: z.string(),
  ip: z.string(),
  /** The agent the session moved to, and its token: whom to ask whether it still holds the session. */
  target: z.string().url(),
  targetToken: z.string(),
  lentAt: z.string(),
});
export type LentAddress = z.infer<typeof LentAddress>;

/**
 * The records under DATA_DIR/lent, one a session, kept in memory as well (a
 * start reads them without I/O). `keep: false` (an agent linked to a
 * scheduler): none are written. The scheduler gives every start there the
 * addresses in use in its cluster (avoidAddresses), and there hosts come and
 * go: a record whose holder has vanished with its host (a spot instance
 * taken back) could never be asked again and would hold its address for ever.
 */
export class LentAddresses {
  private readonly records = new Map<string, LentAddress>();
  constructor(
    private readonly dataDir: string,
    private readonly keep = true,
  ) {}

  private file(sessionId: string): string {
    return join(this.dataDir, 'lent', `${sessionId}.json`);
  }

  async load(): Promise<void> {
    for (const r of await readJsonRecords(join(this.dataDir, 'lent'), LentAddress)) this.records.set(r.sessionId, r);
  }

  /** Recorded before a move's commit, so that no start between the commit and the move's end takes the address. */
  async lend(sessionId: string, ip: string, target: { url: string; token: string }): Promise<void> {
    if (!this.keep) return;
    const r: LentAddress = { sessionId, ip, target: target.url, targetToken: target.token, lentAt: new Date().toISOString() };
    await writeJsonRecord(this.file(sessionId), r);
    this.records.set(sessionId, r);
  }

  /** The session is this agent's again (its move failed, or it moved back here), or gone wherever it went. */
  async forget(sessionId: string): Promise<void> {
    if (!this.records.delete(sessionId)) return;
    await removeJsonRecord(this.file(sessionId));
  }

  find(sessionId: string): LentAddress | undefined {
    return this.records.get(sessionId);
  }

  list(): LentAddress[] {
    return [...this.records.values()];
  }

  addresses(): string[] {
    return this.list().map((r) => r.ip);
  }
}
