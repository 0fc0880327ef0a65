import type { Logger } from 'pino';
import type { Decision } from '../core/decision.js';
import type { Operation, OperationKind } from '../core/control.js';
import { ConflictError } from '../core/errors.js';
import { newOperationId } from '../core/ids.js';
import { actionRecord } from './action-record.js';
import type { OpsQueue } from './queue.js';
import type { ControlState } from './state.js';

function kindOf(d: Decision): OperationKind {
  return d.action === 'release-node' ? 'release-node' : d.action;
}

/** Where the claim requires the session to be still: its source, except for a restore (it is in the store). */
function expectedNode(op: Operation): string | null {
  return op.kind === 'restore' || op.kind === 'release-node' ? null : op.source;
}

export interface Planned {
  op: Operation;
  decision: Decision;
}

/**
 * Turns decisions into operations on the queue. Each operation first claims
 * its session in Redis (one at a time, and only if the session is still
 * where the decision saw it), so two schedulers that reach the same decision
 * apply it once. Every planned operation lands in the action log.
 */
export class Planner {
  constructor(
    private readonly state: ControlState,
    private readonly queue: OpsQueue,
    private readonly log: Logger,
  ) {}

  async operationFor(d: Decision, kind: OperationKind = kindOf(d), now = new Date()): Promise<Operation> {
    const base = d.sessionId ? await this.state.findSession(d.sessionId) : null;
    return {
      id: newOperationId(now.getTime()),
      kind,
      sessionId: d.sessionId,
      source: d.source,
      target: d.target,
      baseCheckpoint: base?.lastCheckpoint ?? null,
      decision: d,
      createdAt: now.toISOString(),
    };
  }

  /** Plans what it can; decisions whose session is taken or has moved are skipped. */
  async plan(decisions: Decision[], now = new Date()): Promise<Planned[]> {
    const out: Planned[] = [];
    for (const d of decisions) {
      const op = await this.operationFor(d, kindOf(d), now);
      const claimed = await this.state.claim(op, expectedNode(op));
      if (!claimed.ok) {
        this.log.debug({ session: d.sessionId, why: claimed.why, detail: claimed.detail }, 'decision skipped');
        continue;
      }
      await this.submit(op);
      out.push({ op, decision: d });
    }
    return out;
  }

  /** Plans one operation an operator asked for; refuses while another holds the session. */
  async planOne(op: Operation): Promise<Operation> {
    const claimed = await this.state.claim(op, expectedNode(op));
    if (!claimed.ok) {
      throw new ConflictError(
        claimed.why === 'held'
          ? `session ${op.sessionId} is busy with operation ${claimed.detail}; wait for it (hubshift jobs) and try again`
          : `session ${op.sessionId} is no longer on ${op.source} (now: ${claimed.detail || 'in the store'}); look again with hubshift session show`,
      );
    }
    await this.submit(op);
    return op;
  }

  private async submit(op: Operation): Promise<void> {
    try {
      // Kept with the operation's step results: the API shows an operation by its id.
      await this.state.setStepResult(op.id, 'op', op);
      await this.queue.add(op);
    } catch (err) {
      await this.state.release(op);
      throw err;
    }
    await this.state.recordAction(actionRecord(op, 'planned', null));
    const d = op.decision;
    this.log.info({ operation: op.id, kind: op.kind, session: op.sessionId, source: op.source, target: op.target, policy: d.policy, reason: d.reason }, 'operation planned');
  }
}
