import type { SessionReport } from '../core/control.js';
import { sessionView, type Session } from '../core/session.js';
import { sampleSession, type SessionMetrics } from './metrics.js';
import type { SessionRegistry } from './session-registry.js';

function isoOrNull(t: string | null): string | null {
  if (!t) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/**
 * What this agent tells the scheduler about its sessions, and the CPU rate
 * between two reports. Each session is reported as the registry has it once
 * sampled, not as it was listed: sampling asks the session's server, which
 * in a move stalls through the freeze and is then answered by the target
 * (same address), so a session moved away meanwhile must be left out, not
 * pushed as still running here (it would pull the scheduler's record back).
 */
export class SessionReporter {
  private readonly cpu = new Map<string, { at: number; seconds: number }>();

  constructor(
    private readonly registry: Pick<SessionRegistry, 'list' | 'find'>,
    private readonly sample: (s: Session) => Promise<SessionMetrics> = sampleSession,
  ) {}

  async reports(): Promise<SessionReport[]> {
    const listed = this.registry.list();
    const out = await Promise.all(listed.map(async (s) => this.report(s)));
    for (const id of this.cpu.keys()) if (!this.registry.find(id)) this.cpu.delete(id);
    return out.filter((r): r is SessionReport => r !== null);
  }

  private async report(listed: Session): Promise<SessionReport | null> {
    const m = await this.sample(listed);
    const s = this.registry.find(listed.id);
    if (!s) return null;
    const at = Date.parse(m.at);
    const prev = this.cpu.get(s.id);
    this.cpu.set(s.id, { at, seconds: m.cpuSeconds });
    const cores = prev && at > prev.at ? Math.max(0, (m.cpuSeconds - prev.seconds) / ((at - prev.at) / 1000)) : 0;
    const { id, user, state, url, token, lastCheckpoint } = sessionView(s);
    return {
      id,
      user,
      state,
      url,
      token,
      rssBytes: m.rssBytes,
      cpuCores: cores,
      busy: m.kernels.some((k) => k.busy),
      connections: m.connections,
      lastActivityAt: isoOrNull(m.lastActivity),
      lastCheckpoint,
    };
  }
}
