import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { LedgerStore } from '../scheduler/ledger-store.js';
import type { ControlState } from '../scheduler/state.js';

/**
 * Prometheus metrics, read from Redis at each scrape: every scheduler
 * sharing the Redis shows the same figures. Names start with hubshift_.
 */
export function schedulerMetrics(state: ControlState, ledger: LedgerStore): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hubshift_scheduler_' });

  new Gauge({
    name: 'hubshift_nodes',
    help: 'Registered nodes by market, instance type and state',
    labelNames: ['lifecycle', 'instance_type', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const n of await state.listNodesAsHeard(new Date())) this.inc({ lifecycle: n.lifecycle, instance_type: n.instanceType, state: n.state });
    },
  });
  new Gauge({
    name: 'hubshift_node_price_usd_per_hour',
    help: 'What each node costs now, USD per hour',
    labelNames: ['node', 'instance_type', 'lifecycle'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const n of await state.listNodes()) this.set({ node: n.name, instance_type: n.instanceType, lifecycle: n.lifecycle }, n.pricePerHour);
    },
  });
  new Gauge({
    name: 'hubshift_sessions',
    help: 'Sessions by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await state.listSessions()) this.inc({ state: s.state });
    },
  });
  new Gauge({
    name: 'hubshift_session_memory_bytes',
    help: 'Memory each running session holds',
    labelNames: ['session', 'user', 'node'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of await state.listSessions()) if (s.node) this.set({ session: s.id, user: s.user, node: s.node }, s.rssBytes);
    },
  });
  const today = async () => ledger.day(new Date().toISOString().slice(0, 10));
  new Gauge({
    name: 'hubshift_cost_today_usd',
    help: "Today's cost (UTC day): what hubshift paid and what each baseline would have",
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      const t = (await today())?.totals;
      this.set({ kind: 'actual' }, t?.actualUsd ?? 0);
      this.set({ kind: 'on_demand' }, t?.onDemandUsd ?? 0);
      this.set({ kind: 'culling' }, t?.cullingUsd ?? 0);
      this.set({ kind: 'unallocated' }, t?.unallocatedUsd ?? 0);
    },
  });
  new Gauge({
    name: 'hubshift_savings_today_usd',
    help: "Today's savings against always-on on-demand, by the policy that caused them",
    labelNames: ['policy'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [policy, v] of Object.entries((await today())?.savingsByPolicy ?? {})) this.set({ policy }, v);
    },
  });
  new Gauge({
    name: 'hubshift_month_forecast_usd',
    help: "The month's cost at the last day's rate, hubshift's and each baseline's",
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      const f = await ledger.forecast(new Date());
      this.set({ kind: 'actual' }, f.forecast.actualUsd);
      this.set({ kind: 'on_demand' }, f.forecast.onDemandUsd);
      this.set({ kind: 'culling' }, f.forecast.cullingUsd);
    },
  });
  new Gauge({
    name: 'hubshift_actions',
    help: 'Actions in the action log by kind, outcome and policy',
    labelNames: ['action', 'outcome', 'policy'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const a of await state.actions(10_000)) this.inc({ action: a.action, outcome: a.outcome, policy: a.policy });
    },
  });
  new Gauge({
    name: 'hubshift_notices',
    help: 'Spot interruption and rebalance notices in force',
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const n of await state.listNotices(new Date())) this.inc({ kind: n.kind });
    },
  });
  return registry;
}
