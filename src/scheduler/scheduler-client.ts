import { z } from 'zod';
import { NoticeInfo } from '../core/cluster.js';
import { ActionRecord, CheckpointRecord, EvacuationReport, JobView, Operation, PlacedSession, type MetricsPush, type NodeRegistration, type NoticeRequest } from '../core/control.js';
import { Decision } from '../core/decision.js';
import { DashboardView } from '../core/ledger.js';
import { JsonClient } from '../util/json-client.js';

export const OperationStatus = z.object({
  operation: Operation,
  status: z.enum(['waiting', 'active', 'completed', 'failed']),
  steps: z.array(JobView),
});
export type OperationStatus = z.infer<typeof OperationStatus>;

const Planned = z.object({ operation: Operation });

/** The scheduler's API, as agents and the CLI call it. Every answer is parsed. */
export class SchedulerClient {
  private readonly http: JsonClient;
  constructor(
    readonly baseUrl: string,
    token: string,
    timeoutMs = 60_000,
  ) {
    this.http = new JsonClient(baseUrl, token, 'scheduler', 'is hubshift scheduler running there?', timeoutMs);
  }

  register(reg: NodeRegistration) {
    return this.http.call('POST', 'v1/nodes', z.object({ name: z.string(), ignoredFields: z.array(z.string()).optional() }).passthrough(), reg);
  }
  nodes() {
    return this.http.call('GET', 'v1/nodes', z.object({ nodes: z.array(z.object({ name: z.string(), state: z.string(), instanceType: z.string(), lifecycle: z.string(), pricePerHour: z.number(), memoryBytes: z.number() }).passthrough()) })).then((r) => r.nodes);
  }
  pushMetrics(node: string, push: MetricsPush) {
    return this.http.call('POST', `v1/nodes/${encodeURIComponent(node)}/metrics`, z.object({ updated: z.number(), ignored: z.number(), ignoredFields: z.array(z.string()).optional() }), push);
  }
  notice(n: NoticeRequest | Record<string, unknown>) {
    return this.http.call('POST', 'v1/notices', z.object({ notice: NoticeInfo, planned: z.array(Operation) }), n);
  }
  notices() {
    return this.http.call('GET', 'v1/notices', z.object({ notices: z.array(NoticeInfo) })).then((r) => r.notices);
  }
  /** What became of each session a notice concerned. */
  evacuation(noticeId: string) {
    return this.http.call('GET', `v1/notices/${encodeURIComponent(noticeId)}/report`, EvacuationReport);
  }
  listSessions() {
    return this.http.call('GET', 'v1/sessions', z.object({ sessions: z.array(PlacedSession) })).then((r) => r.sessions);
  }
  getSession(id: string) {
    return this.http.call('GET', `v1/sessions/${encodeURIComponent(id)}`, PlacedSession);
  }
  startSession(user: string, opts: { env?: Record<string, string>; node?: string; memoryBytes?: number } = {}) {
    return this.http.call('POST', 'v1/sessions', PlacedSession, { user, env: opts.env ?? {}, ...(opts.node ? { node: opts.node } : {}), ...(opts.memoryBytes ? { resources: { memoryBytes: opts.memoryBytes } } : {}) });
  }
  /** The session a hub path (/user/NAME/...) goes to. */
  route(path: string) {
    return this.http.call('GET', `v1/routes?${new URLSearchParams({ path })}`, PlacedSession);
  }
  gateway() {
    return this.http.call('GET', 'v1/gateway', z.object({ url: z.string() }));
  }
  checkpoints(id: string) {
    return this.http.call('GET', `v1/sessions/${encodeURIComponent(id)}/checkpoints`, z.object({ checkpoints: z.array(CheckpointRecord) })).then((r) => r.checkpoints);
  }
  removeSession(id: string) {
    return this.http.call('DELETE', `v1/sessions/${encodeURIComponent(id)}`, z.null());
  }
  checkpoint(id: string, leaveRunning = false) {
    return this.http.call('POST', `v1/sessions/${encodeURIComponent(id)}/checkpoint`, Planned, { leaveRunning }).then((r) => r.operation);
  }
  restore(id: string, node?: string) {
    return this.http.call('POST', `v1/sessions/${encodeURIComponent(id)}/restore`, Planned, node ? { node } : {}).then((r) => r.operation);
  }
  migrate(id: string, to: string) {
    return this.http.call('POST', `v1/sessions/${encodeURIComponent(id)}/migrate`, Planned, { to }).then((r) => r.operation);
  }
  operation(id: string) {
    return this.http.call('GET', `v1/operations/${encodeURIComponent(id)}`, OperationStatus);
  }
  jobs(state?: string, limit = 100) {
    const q = new URLSearchParams({ limit: String(limit), ...(state ? { state } : {}) });
    return this.http.call('GET', `v1/jobs?${q}`, z.object({ jobs: z.array(JobView) })).then((r) => r.jobs);
  }
  /** What the FinOps dashboard shows: nodes, sessions, actions, the day's ledger. */
  dashboard() {
    return this.http.call('GET', 'v1/dashboard', DashboardView);
  }

  actions(limit = 100) {
    return this.http.call('GET', `v1/actions?limit=${limit}`, z.object({ actions: z.array(ActionRecord) })).then((r) => r.actions);
  }
  plan() {
    return this.http.call('GET', 'v1/plan', z.object({ at: z.string(), decisions: z.array(Decision), costPerHour: z.number() }));
  }
  reloadPolicies() {
    return this.http.call('POST', 'v1/policies/reload', z.object({ ok: z.boolean(), policies: z.array(z.string()) }));
  }
}
