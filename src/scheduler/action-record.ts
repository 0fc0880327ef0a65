import type { ActionRecord, Operation } from '../core/control.js';

/**
 * The action log's entry for an operation at one point of its life.
 * `instead`: a move that ended as a checkpoint to the store (its worker
 * reached it too late); the entry says so, and what it did.
 */
export function actionRecord(op: Operation, outcome: ActionRecord['outcome'], detail: string | null, at = new Date(), instead = false): ActionRecord {
  const d = op.decision;
  return {
    at: at.toISOString(),
    operation: op.id,
    action: op.kind === 'restore' ? 'restore' : instead ? 'checkpoint' : d.action,
    outcome,
    sessionId: op.sessionId,
    source: op.source,
    target: instead ? null : op.target,
    policy: d.policy,
    reason: d.reason,
    costPerHour: d.costPerHour,
    detail,
  };
}
