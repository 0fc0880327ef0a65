import type { Logger } from 'pino';
import type { ActionRecord } from '../core/control.js';
import type { InstanceTypeInfo } from '../core/cluster.js';
import type { LedgerCause } from '../core/ledger.js';
import { errorMessage } from '../core/errors.js';
import { typesFromNodes } from '../pricing/instance-types.js';
import { DEFAULT_CULL_AFTER_MS, ledgerMinute, type LedgerSessionInput } from '../pricing/ledger.js';
import type { LedgerStore } from './ledger-store.js';
import type { ControlState } from './state.js';

export interface LedgerRecorderOptions {
  /** The culling baseline's idle time (default 1 h). */
  cullAfterMs: number;
  /** The cloud's catalog, when one is configured; else the registered nodes' types. */
  instanceTypes?: () => Promise<InstanceTypeInfo[]>;
}

/** The latest completed action on each session: what its savings are put down to. */
export function causesOf(actions: readonly ActionRecord[]): Map<string, LedgerCause> {
  const out = new Map<string, LedgerCause>();
  // Newest first, as the action log keeps them.
  for (const a of actions) {
    if (a.outcome !== 'done' || !a.sessionId || out.has(a.sessionId)) continue;
    out.set(a.sessionId, { policy: a.policy, action: a.action, operation: a.operation });
  }
  return out;
}

/**
 * Writes the ledger once a minute: the state at each minute's end, priced by
 * the pure ledger function. Every scheduler runs one; a claim per minute in
 * Redis lets just one of them record it.
 */
export class LedgerRecorder {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly state: ControlState,
    private readonly store: LedgerStore,
    private readonly log: Logger,
    private readonly opts: LedgerRecorderOptions = { cullAfterMs: DEFAULT_CULL_AFTER_MS },
  ) {}

  /** Prices the minute that starts at `minute` from the state now, and records it. */
  async recordMinute(minute: Date): Promise<boolean> {
    const [nodes, sessions, actions] = await Promise.all([this.state.listNodes(), this.state.listSessions(), this.state.actions(10_000)]);
    const causes = causesOf(actions);
    const inputs: LedgerSessionInput[] = await Promise.all(
      sessions.map(async (s) => ({
        id: s.id,
        user: s.user,
        group: s.group,
        node: s.node,
        state: s.state,
        requestedBytes: s.requestedBytes,
        peakRssBytes: await this.store.peak(s.id, s.rssBytes),
        lastActivityAt: s.lastActivityAt,
        cause: causes.get(s.id) ?? null,
      })),
    );
    const instanceTypes = this.opts.instanceTypes ? await this.opts.instanceTypes() : typesFromNodes(nodes);
    const r = ledgerMinute({ minute, nodes, sessions: inputs, instanceTypes, cullAfterMs: this.opts.cullAfterMs });
    return this.store.record(r.minute, r.sessions);
  }

  start(): void {
    const schedule = (): void => {
      const now = Date.now();
      const next = Math.floor(now / 60_000) * 60_000 + 60_000;
      this.timer = setTimeout(() => {
        // The minute that just ended.
        this.recordMinute(new Date(next - 60_000))
          .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'recording the ledger minute failed'))
          .finally(() => this.timer && schedule());
      }, next - now + 500);
      this.timer.unref();
    };
    schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
