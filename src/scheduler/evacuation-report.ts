import type { NoticeInfo } from '../core/cluster.js';
import type { ActionRecord, EvacuationReport, SessionRecord } from '../core/control.js';
import type { NodeLaneState } from './node-lanes.js';

type ReportRow = EvacuationReport['sessions'][number];

/**
 * What became of a notice's sessions, from the action log (pure): for each
 * session an operation took off the node since the notice came, its latest
 * outcome and how long before the deadline it was done, and for one still
 * planned where it stands at the node's lanes (`lanes`, read from Redis);
 * and the sessions still on the node that nothing took.
 */
export function evacuationReport(notice: NoticeInfo, actions: readonly ActionRecord[], sessions: readonly SessionRecord[], lanes: NodeLaneState = { leaving: [], waiting: [] }): EvacuationReport {
  const since = Date.parse(notice.receivedAt);
  const deadline = notice.deadline ? Date.parse(notice.deadline) : null;
  // The log is newest first: the first entry seen per session is its latest.
  const latest = new Map<string, ActionRecord>();
  for (const a of actions) {
    if (a.sessionId === null || a.source !== notice.node || Date.parse(a.at) < since) continue;
    if (!latest.has(a.sessionId)) latest.set(a.sessionId, a);
  }
  // A lane's owner is a step, OPERATION:STEP.
  const operationOf = (owner: string): string => owner.slice(0, owner.lastIndexOf(':'));
  const leaving = new Set(lanes.leaving.map(operationOf));
  const turns = new Map<string, number>();
  for (const owner of lanes.waiting) if (!turns.has(operationOf(owner))) turns.set(operationOf(owner), turns.size + 1);
  const laneOf = (a: ActionRecord): ReportRow['lane'] => {
    if (a.outcome !== 'planned') return null;
    if (leaving.has(a.operation)) return { state: 'leaving', turn: null };
    const turn = turns.get(a.operation);
    return turn === undefined ? null : { state: 'waiting', turn };
  };
  const rows = [...latest.values()]
    .map((a) => ({
      sessionId: a.sessionId as string,
      action: a.action,
      outcome: a.outcome,
      lane: laneOf(a),
      target: a.target,
      at: a.at,
      marginSeconds: deadline !== null && a.outcome === 'done' ? (deadline - Date.parse(a.at)) / 1000 : null,
      detail: a.detail,
    }))
    .sort((x, y) => x.sessionId.localeCompare(y.sessionId));
  const left = sessions.filter((s) => s.node === notice.node && s.state === 'running' && !latest.has(s.id)).map((s) => s.id);
  return { notice: { id: notice.id, node: notice.node, kind: notice.kind, deadline: notice.deadline, receivedAt: notice.receivedAt }, sessions: rows, left };
}


/** A planned session's place at the node's lanes, in words. */
export function describeLane(lane: NonNullable<ReportRow['lane']>): string {
  return lane.state === 'leaving' ? 'leaving the node now' : `waiting for a lane off the node, turn ${lane.turn ?? '?'}`;
}

/** The progress line of `notice --wait`: how many are done, and of the rest how many are leaving, waiting for a lane, or queued. */
export function evacuationProgress(report: EvacuationReport): string {
  const rows = report.sessions;
  const count = (f: (x: ReportRow) => boolean): number => rows.filter(f).length;
  const planned = (f: (x: ReportRow) => boolean): number => count((x) => x.outcome === 'planned' && f(x));
  const parts = [
    [planned((x) => x.lane?.state === 'leaving'), 'leaving'],
    [planned((x) => x.lane?.state === 'waiting'), 'waiting for a lane'],
    [planned((x) => x.lane === null), 'queued'],
  ] as const;
  const rest = parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`);
  return `${count((x) => x.outcome !== 'planned')} of ${rows.length} done${rest.length ? `; ${rest.join(', ')}` : ''}`;
}
