import type { NoticeInfo } from '../core/cluster.js';
import type { ActionRecord, EvacuationReport, SessionRecord } from '../core/control.js';

/**
 * What became of a notice's sessions, from the action log (pure): for each
 * session an operation took off the node since the notice came, its latest
 * outcome and how long before the deadline it was done; and the sessions
 * still on the node that nothing took.
 */
export function evacuationReport(notice: NoticeInfo, actions: readonly ActionRecord[], sessions: readonly SessionRecord[]): EvacuationReport {
  const since = Date.parse(notice.receivedAt);
  const deadline = notice.deadline ? Date.parse(notice.deadline) : null;
  // The log is newest first: the first entry seen per session is its latest.
  const latest = new Map<string, ActionRecord>();
  for (const a of actions) {
    if (a.sessionId === null || a.source !== notice.node || Date.parse(a.at) < since) continue;
    if (!latest.has(a.sessionId)) latest.set(a.sessionId, a);
  }
  const rows = [...latest.values()]
    .map((a) => ({
      sessionId: a.sessionId as string,
      action: a.action,
      outcome: a.outcome,
      target: a.target,
      at: a.at,
      marginSeconds: deadline !== null && a.outcome === 'done' ? (deadline - Date.parse(a.at)) / 1000 : null,
      detail: a.detail,
    }))
    .sort((x, y) => x.sessionId.localeCompare(y.sessionId));
  const left = sessions.filter((s) => s.node === notice.node && s.state === 'running' && !latest.has(s.id)).map((s) => s.id);
  return { notice: { id: notice.id, node: notice.node, kind: notice.kind, deadline: notice.deadline, receivedAt: notice.receivedAt }, sessions: rows, left };
}
