import type { DashboardView } from '../core/ledger.js';
import { hubUserName } from '../hub/hub-user-names.js';
import { addCosts, type Costs } from '../pricing/ledger.js';
import { sessionShareCostPerHour, storeCostPerHour } from '../pricing/session-cost.js';
import type { LedgerStore } from '../scheduler/ledger-store.js';
import type { ControlState } from '../scheduler/state.js';

const BUCKET_MS = 15 * 60_000;

/** Everything the dashboard's page shows for one day (UTC), read in one pass. */
export async function dashboardView(state: ControlState, ledger: LedgerStore, now: Date, day = now.toISOString().slice(0, 10)): Promise<DashboardView> {
  const dayStart = new Date(`${day}T00:00:00.000Z`);
  const dayEnd = new Date(dayStart.getTime() + 86_400_000);
  const [nodes, sessions, actions, minutes, today, forecast] = await Promise.all([
    state.listNodesAsHeard(now),
    state.listSessions(),
    state.actions(50),
    ledger.minutes(dayStart, dayEnd),
    ledger.day(day),
    ledger.forecast(now),
  ]);
  const byNode = new Map(nodes.map((n) => [n.name, n]));
  const timeline: DashboardView['timeline'] = [];
  const run: Costs = { actualUsd: 0, onDemandUsd: 0, cullingUsd: 0 };
  for (const m of minutes) {
    addCosts(run, m.totals);
    const bucket = new Date(Math.floor(Date.parse(m.minute) / BUCKET_MS) * BUCKET_MS).toISOString();
    const last = timeline.at(-1);
    if (last?.at === bucket) Object.assign(last, run);
    else timeline.push({ at: bucket, ...run });
  }
  return {
    at: now.toISOString(),
    day,
    nodes: nodes.map((n) => {
      const on = sessions.filter((s) => s.node === n.name);
      return {
        name: n.name,
        instanceType: n.instanceType,
        lifecycle: n.lifecycle,
        zone: n.zone,
        state: n.state,
        pricePerHour: n.pricePerHour,
        memoryBytes: n.memoryBytes,
        usedBytes: on.reduce((a, s) => a + s.rssBytes, 0),
        sessions: on.length,
        costToday: today?.byNode[n.name] ?? 0,
      };
    }),
    sessions: sessions.map((s) => {
      const node = s.node ? byNode.get(s.node) : undefined;
      const bytes = Math.max(s.rssBytes, s.requestedBytes ?? 0);
      return {
        id: s.id,
        // Hub users by the hub's own name, as people know them (the spawner may have escaped it).
        user: s.hub?.user ?? hubUserName(s.user),
        group: s.group ?? 'ungrouped',
        node: s.node,
        state: s.state,
        rssBytes: s.rssBytes,
        cpuCores: s.cpuCores,
        busy: s.busy,
        lastActivityAt: s.lastActivityAt,
        costPerHour: node ? sessionShareCostPerHour(node, bytes) : storeCostPerHour(bytes),
      };
    }),
    actions: actions.map((a) => ({ at: a.at, action: a.action, outcome: a.outcome, sessionId: a.sessionId, source: a.source, target: a.target, policy: a.policy, reason: a.reason, costPerHour: a.costPerHour, detail: a.detail })),
    timeline,
    ledger: today && { ...today, byUser: Object.fromEntries(Object.entries(today.byUser).map(([u, sums]) => [hubUserName(u), sums])) },
    forecast,
  };
}
