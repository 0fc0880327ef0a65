import type { ActionRecord, Operation } from '../core/control.js';

/** The action log's entry for an operation at one point of its life. */
export function actionRecord(op: Operation, outcome: ActionRecord['outcome'], detail: string | null, at = new Date()): ActionRecord {
  const d = op.decision;
  return {
    at: at.toISOString(),
    operation: op.id,
    action: op.kind === 'restore' ? 'restore' : d.action,
    outcome,
    sessionId: op.sessionId,
    source: op.source,
    target: op.target,
    policy: d.policy,
    reason: d.reason,
    costPerHour: d.costPerHour,
    detail,
  };
}
