import cookieParser from 'cookie-parser';
import express, { type Express, type Request } from 'express';
import { z } from 'zod';
import { AgentClient } from '../agent/agent-client.js';
import { HubRoute, MetricsPush, NodeRegistration, Operation, SessionReport, type NodeRecord, type PlacedSession, type SessionRecord } from '../core/control.js';
import type { Decision } from '../core/decision.js';
import { ConflictError, InputError, NotFoundError, UnreachableError, describeZodIssue, fieldsUnknownTo, itemFieldsUnknownTo } from '../core/errors.js';
import { HUB_PREFIX_ENV, SessionId, SessionSpec } from '../core/session.js';
import { EvaluationContext } from '../policy/evaluation-context.js';
import { DEFAULT_GUARDS } from '../policy/policy-schema.js';
import type { ControlLoop } from '../scheduler/control-loop.js';
import { evacuationReport } from '../scheduler/evacuation-report.js';
import { nodeLaneState } from '../scheduler/node-lanes.js';
import { parseNotice } from '../scheduler/notices.js';
import type { Planner } from '../scheduler/planner.js';
import type { OpsQueue } from '../scheduler/queue.js';
import type { SessionLocks } from '../scheduler/session-lock.js';
import type { ControlState } from '../scheduler/state.js';
import { bearerOrDashboardCookie, cookieValid, dashboardCookie, DASHBOARD_COOKIE } from './dashboard-auth.js';
import { dashboardView } from './dashboard-view.js';
import { schedulerMetrics } from './metrics.js';
import { tokenMatches } from './bearer-auth.js';
import { dashboardPage, loginPage } from '../dashboard/page.js';
import type { LedgerStore } from '../scheduler/ledger-store.js';
import { errorMiddleware } from './error-middleware.js';
import type { Logger } from 'pino';

export interface SchedulerAppContext {
  token: string;
  /** The session gateway's address as JupyterHub's proxy reaches it, when one runs. */
  gatewayUrl?: () => string | undefined;
  state: ControlState;
  queue: OpsQueue;
  planner: Planner;
  loop: ControlLoop;
  locks: SessionLocks;
  ledger: LedgerStore;
  log: Logger;
}

/** What a new session is assumed to need before it reports its own memory. */
const NEW_SESSION_BYTES = 256 * 2 ** 20;

function body<T>(schema: z.ZodType<T>, req: Request, what: string): T {
  const r = schema.safeParse(req.body ?? {});
  if (!r.success) throw new InputError(`${what} refused: ${describeZodIssue(r.error)}`);
  return r.data;
}

function param<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new InputError(`${what} ${String(value)}: ${r.error.issues[0]?.message}`);
  return r.data;
}

/** A node as the API shows it: never its agent's token. */
function publicNode({ agentToken: _t, ...n }: NodeRecord): Omit<NodeRecord, 'agentToken'> {
  return n;
}

function manualDecision(action: Decision['action'], s: SessionRecord, target: string | null): Decision {
  return { action, sessionId: s.id, source: s.node, target, policy: 'manual', reason: 'asked for through the API', costPerHour: 0, deadline: null };
}

const NodeName = z.string().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/, 'is not a node name');
const StartRequest = SessionSpec.omit({ avoidAddresses: true }).extend({
  node: NodeName.optional(),
  /** What the user asked for (JupyterHub's mem_limit / cpu_limit): placement makes room for it. */
  resources: z.object({ memoryBytes: z.number().int().positive().optional(), cpus: z.number().positive().optional() }).strict().default({}),
  /** The user's group, for the cost ledger's savings by group. */
  group: z.string().min(1).max(128).optional(),
}).strict();

/** The hub's route of a session it starts, from the environment the hub gives its server. */
function hubRoute(env: Record<string, string>): HubRoute | null {
  const prefix = env[HUB_PREFIX_ENV];
  if (prefix === undefined) return null;
  const r = HubRoute.safeParse({ user: env.JUPYTERHUB_USER, server: env.JUPYTERHUB_SERVER_NAME ?? '', prefix });
  if (!r.success) throw new InputError(`session refused: the hub's environment ${describeZodIssue(r.error, '(env)')} (JUPYTERHUB_USER and ${HUB_PREFIX_ENV} are needed together)`);
  return r.data;
}
const CheckpointRequest = z.object({ leaveRunning: z.boolean().default(false) }).strict();
const RestoreRequest = z.object({ node: NodeName.optional() }).strict();
const MigrateRequest = z.object({ to: NodeName }).strict();
const JOB_STATES = ['active', 'waiting', 'waiting-children', 'delayed', 'prioritized', 'completed', 'failed'] as const;
const JobsQuery = z.object({
  state: z.enum(JOB_STATES).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** The scheduler's HTTP API: agents register and push here, notices come in, operators and the CLI ask. */
export function createSchedulerApp(ctx: SchedulerAppContext): Express {
  const { state, planner } = ctx;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '8mb' }));

  app.get('/healthz', async (_req, res) => {
    const pong = await state.redis.ping();
    res.json({ ok: pong === 'PONG', policyError: ctx.loop.policyError });
  });

  // ---- the dashboard: a page behind a sign-in form; the browser then holds a cookie

  app.use(cookieParser());
  app.get('/dashboard', (req, res) => {
    res.type('html').set('cache-control', 'no-store');
    res.send(cookieValid(ctx.token, req.cookies?.[DASHBOARD_COOKIE]) ? dashboardPage() : loginPage(null));
  });
  app.post('/dashboard/login', express.urlencoded({ extended: false, limit: '4kb' }), (req, res) => {
    const given = typeof req.body?.token === 'string' ? req.body.token.trim() : '';
    if (!tokenMatches(given, ctx.token)) {
      res.status(401).type('html').send(loginPage('That is not the scheduler\'s token.'));
      return;
    }
    const c = dashboardCookie(ctx.token);
    res.cookie(DASHBOARD_COOKIE, c.value, { httpOnly: true, sameSite: 'strict', maxAge: c.maxAgeMs, path: '/', secure: req.secure });
    res.redirect(303, '/dashboard');
  });
  app.get('/dashboard/logout', (_req, res) => {
    res.clearCookie(DASHBOARD_COOKIE, { path: '/' });
    res.redirect(303, '/dashboard');
  });

  app.use(bearerOrDashboardCookie(ctx.token));

  const metrics = schedulerMetrics(state, ctx.ledger);
  app.get('/metrics', async (_req, res) => {
    res.set('content-type', metrics.contentType).send(await metrics.metrics());
  });

  const Day = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a day like 2026-11-24');
  app.get('/v1/dashboard', async (req, res) => {
    const day = req.query.day === undefined ? undefined : param(Day, req.query.day, 'day');
    res.json(await dashboardView(state, ctx.ledger, new Date(), day));
  });
  app.get('/v1/ledger/days', async (req, res) => {
    const from = req.query.from === undefined ? undefined : param(Day, req.query.from, 'from');
    const to = req.query.to === undefined ? undefined : param(Day, req.query.to, 'to');
    res.json({ days: await ctx.ledger.days(from, to) });
  });
  app.get('/v1/ledger/minutes', async (req, res) => {
    const Time = z.coerce.date();
    const to = req.query.to === undefined ? new Date() : param(Time, req.query.to, 'to');
    const from = req.query.from === undefined ? new Date(to.getTime() - 86_400_000) : param(Time, req.query.from, 'from');
    res.json({ minutes: await ctx.ledger.minutes(from, to) });
  });

  const placed = async (s: SessionRecord): Promise<PlacedSession> => ({
    id: s.id,
    user: s.user,
    node: s.node,
    state: s.state,
    url: s.url,
    token: s.token,
    lastCheckpoint: s.lastCheckpoint,
    operation: await state.claimOf(s.id),
    hub: s.hub,
    lostWithNode: s.lostWithNode,
  });

  /** The cheapest ready node with room for `bytes`, as the policies would place it. */
  const choose = async (bytes: number, exclude: Set<string>): Promise<string> => {
    const now = new Date();
    const snapshot = await state.snapshot(now, { withSamples: false });
    const node = new EvaluationContext(snapshot, DEFAULT_GUARDS, now).place(bytes, 1, exclude);
    if (!node) {
      const silent = snapshot.nodes.filter((n) => n.state === 'silent').map((n) => n.name);
      const quiet = silent.length ? `; not heard from lately, so not used: ${silent.join(', ')} (is its agent running and reaching the scheduler?)` : '';
      throw new ConflictError(`no ready node has room for ${(bytes / 2 ** 20).toFixed(0)} MiB (${snapshot.nodes.length} registered${quiet}); add a node or free one`);
    }
    return node.name;
  };

  // ---- agents

  app.post('/v1/nodes', async (req, res) => {
    const reg = body(NodeRegistration, req, 'node registration');
    const ignoredFields = fieldsUnknownTo(NodeRegistration, req.body);
    if (ignoredFields.length) ctx.log.warn({ node: reg.name, ignoredFields }, 'registration fields this scheduler does not know were ignored (the agent is newer: upgrade the scheduler)');
    res.json({ ...publicNode(await state.registerNode(reg, new Date())), ...(ignoredFields.length ? { ignoredFields } : {}) });
  });

  app.get('/v1/nodes', async (_req, res) => {
    res.json({ nodes: (await state.listNodesAsHeard(new Date())).map(publicNode) });
  });

  // Per node, the fields of its pushes last logged as ignored: logged when they change, not every push.
  const pushFieldsLogged = new Map<string, string>();
  app.post('/v1/nodes/:name/metrics', async (req, res) => {
    const name = param(NodeName, req.params.name, 'node');
    const push = body(MetricsPush, req, 'metrics');
    const raw: unknown = req.body;
    const ignoredFields = [...fieldsUnknownTo(MetricsPush, raw), ...itemFieldsUnknownTo(SessionReport, (raw as { sessions?: unknown }).sessions, 'sessions')].slice(0, 20);
    if (ignoredFields.join() !== (pushFieldsLogged.get(name) ?? '')) {
      pushFieldsLogged.set(name, ignoredFields.join());
      if (ignoredFields.length) ctx.log.warn({ node: name, ignoredFields }, 'metrics fields this scheduler does not know were ignored (the agent is newer: upgrade the scheduler)');
    }
    const now = new Date();
    await state.touchNode(name, now);
    res.json({ ...(await state.applyPush(name, push, now)), ...(ignoredFields.length ? { ignoredFields } : {}) });
  });

  // ---- notices

  app.post('/v1/notices', async (req, res) => {
    const now = new Date();
    const notice = await parseNotice(req.body, { byInstance: (id) => state.nodeByInstance(id), exists: async (n) => (await state.findNode(n)) !== null }, now);
    ctx.log.warn({ notice }, 'notice received');
    // Evaluated at once: under a spot notice every second counts.
    const pass = await ctx.loop.kickAfter(() => state.addNotice(notice));
    res.status(202).json({ notice, planned: pass.planned.map((p) => p.op) });
  });

  app.get('/v1/notices', async (_req, res) => {
    res.json({ notices: await state.listNotices(new Date()) });
  });

  app.get('/v1/notices/:id/report', async (req, res) => {
    const id = param(z.string().min(1).max(200), req.params.id, 'notice');
    const notice = (await state.listNotices(new Date())).find((n) => n.id === id);
    if (!notice) throw new NotFoundError(`no notice ${id} in force (GET /v1/notices lists them)`);
    res.json(evacuationReport(notice, await state.actions(10_000), await state.listSessions(), await nodeLaneState(state.redis, notice.node)));
  });

  // ---- sessions

  app.get('/v1/sessions', async (_req, res) => {
    res.json({ sessions: await Promise.all((await state.listSessions()).map(placed)) });
  });

  app.get('/v1/sessions/:id', async (req, res) => {
    res.json(await placed(await state.getSession(param(SessionId, req.params.id, 'session'))));
  });

  app.get('/v1/sessions/:id/checkpoints', async (req, res) => {
    const s = await state.getSession(param(SessionId, req.params.id, 'session'));
    res.json({ checkpoints: await state.checkpoints(s.id) });
  });

  app.post('/v1/sessions', async (req, res) => {
    const spec = body(StartRequest, req, 'session');
    const hub = hubRoute(spec.env);
    const nodeName = spec.node ?? (await choose(spec.resources.memoryBytes ?? NEW_SESSION_BYTES, new Set()));
    const node = await state.getNode(nodeName);
    // Every address a known session holds, wherever it runs or sleeps: a moved session took its address along.
    const held = (await state.listSessions()).map((x) => new URL(x.url).hostname);
    const v = await new AgentClient(node.agentUrl, node.agentToken).startSession(spec.user, spec.env, held);
    const now = new Date().toISOString();
    const rec: SessionRecord = {
      id: v.id,
      user: v.user,
      node: node.name,
      state: v.state,
      url: v.url,
      token: v.token,
      rssBytes: 0,
      cpuCores: 0,
      busy: false,
      connections: 0,
      lastActivityAt: now,
      lastDisruptionAt: null,
      lastCheckpoint: null,
      updatedAt: now,
      hub,
      group: spec.group ?? null,
      requestedBytes: spec.resources.memoryBytes ?? null,
      lostWithNode: null,
    };
    await state.putSession(rec);
    if (hub) await state.setRoute(hub.prefix, rec.id);
    res.status(201).json(await placed(rec));
  });

  app.get('/v1/gateway', (_req, res) => {
    const url = ctx.gatewayUrl?.();
    if (!url) throw new NotFoundError('this scheduler runs no session gateway (start it with --gateway-port, or run hubshift gateway and give the spawner HUBSHIFT_GATEWAY_URL)');
    res.json({ url });
  });

  /** The session the gateway sends a hub path to (the longest matching prefix). */
  app.get('/v1/routes', async (req, res) => {
    const path = param(z.string().startsWith('/').max(4096), req.query.path, 'path');
    const s = await state.sessionAtPath(path);
    if (!s) throw new NotFoundError(`no session serves ${path}`);
    res.json(await placed(s));
  });

  app.delete('/v1/sessions/:id', async (req, res) => {
    const s = await state.getSession(param(SessionId, req.params.id, 'session'));
    const op = await state.claimOf(s.id);
    if (op) throw new ConflictError(`session ${s.id} is busy with operation ${op}; remove it when that is done`);
    const lock = await ctx.locks.acquire(s.id);
    if (!lock) throw new ConflictError(`session ${s.id} is locked by a worker; try again shortly`);
    try {
      const node = s.node ? await state.findNode(s.node) : null;
      if (node) {
        await new AgentClient(node.agentUrl, node.agentToken).removeSession(s.id, lock.token).catch((err: unknown) => {
          if (!(err instanceof UnreachableError) && !(err instanceof Error && 'status' in err && err.status === 404)) throw err;
        });
      }
      await state.deleteSession(s.id);
    } finally {
      await lock.release();
    }
    res.status(204).end();
  });

  const submit = (op: Operation): Promise<Operation> => planner.planOne(op);

  app.post('/v1/sessions/:id/checkpoint', async (req, res) => {
    const s = await state.getSession(param(SessionId, req.params.id, 'session'));
    const { leaveRunning } = body(CheckpointRequest, req, 'checkpoint');
    if (s.state !== 'running' || !s.node) throw new ConflictError(`session ${s.id} is ${s.state}; only a running session can be checkpointed`);
    const d = manualDecision(leaveRunning ? 'snapshot' : 'checkpoint', s, null);
    res.status(202).json({ operation: await submit(await planner.operationFor(d)) });
  });

  app.post('/v1/sessions/:id/restore', async (req, res) => {
    const s = await state.getSession(param(SessionId, req.params.id, 'session'));
    const r = body(RestoreRequest, req, 'restore');
    if (s.state === 'running') throw new ConflictError(`session ${s.id} is already running on ${s.node}`);
    if (!s.lastCheckpoint) throw new ConflictError(`session ${s.id} has no checkpoint to restore`);
    const target = r.node ?? (await choose(Math.max(s.rssBytes, NEW_SESSION_BYTES), new Set()));
    await state.getNode(target);
    const d = manualDecision('migrate', s, target);
    res.status(202).json({ operation: await submit(await planner.operationFor({ ...d, source: null }, 'restore')) });
  });

  app.post('/v1/sessions/:id/migrate', async (req, res) => {
    const s = await state.getSession(param(SessionId, req.params.id, 'session'));
    const { to } = body(MigrateRequest, req, 'migration');
    await state.getNode(to);
    if (s.state !== 'running' || !s.node) throw new ConflictError(`session ${s.id} is ${s.state}; only a running session can be moved (restore it with --node instead)`);
    if (s.node === to) throw new ConflictError(`session ${s.id} is already on ${to}`);
    res.status(202).json({ operation: await submit(await planner.operationFor(manualDecision('migrate', s, to))) });
  });

  // ---- operations and jobs

  app.get('/v1/operations/:id', async (req, res) => {
    const id = param(z.string().regex(/^op[0-9a-z]+$/, 'is not an operation id'), req.params.id, 'operation');
    const op = await state.stepResult(id, 'op', Operation);
    if (!op) throw new NotFoundError(`no operation ${id} (hubshift jobs lists recent ones)`);
    const steps = await ctx.queue.operation(op);
    const status = steps.some((s) => s.state === 'failed') ? 'failed' : steps.length > 0 && steps.every((s) => s.state === 'completed') ? 'completed' : steps.some((s) => s.state === 'active') ? 'active' : 'waiting';
    res.json({ operation: op, status, steps });
  });

  app.get('/v1/jobs', async (req, res) => {
    const q = JobsQuery.safeParse(req.query);
    if (!q.success) throw new InputError(`jobs query refused: ${describeZodIssue(q.error)}`);
    res.json({ jobs: await ctx.queue.list(q.data.state ? [q.data.state] : [...JOB_STATES], q.data.limit) });
  });

  app.get('/v1/actions', async (req, res) => {
    const limit = param(z.coerce.number().int().min(1).max(10_000).default(100), req.query.limit, 'limit');
    res.json({ actions: await state.actions(limit) });
  });

  // ---- policies

  app.get('/v1/plan', async (_req, res) => {
    const now = new Date();
    const { decisions } = await ctx.loop.decide(now);
    res.json({ at: now.toISOString(), decisions, costPerHour: decisions.reduce((a, d) => a + d.costPerHour, 0) });
  });

  app.post('/v1/policies/reload', async (_req, res) => {
    const r = await ctx.loop.policies.reload();
    if (!r.ok) throw new InputError(`policy files refused, the last good set stays in force: ${r.error}`);
    res.json({ ok: true, policies: ctx.loop.policies.policies.policies.map((p) => p.name) });
  });

  app.use(errorMiddleware(ctx.log));
  return app;
}
