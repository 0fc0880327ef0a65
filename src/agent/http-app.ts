import express, { type Express } from 'express';
import { z } from 'zod';
import { CheckpointId, SessionId, sessionView, type Session, type SessionView } from '../core/index.js';
import { bearerAuth } from '../api/bearer-auth.js';
import { errorMiddleware } from '../api/error-middleware.js';
import type { AgentContext } from './agent-context.js';
import { FENCE_HEADER, parseFenceHeader } from './fences.js';
import { checkpointSession, restoreCheckpoint } from './checkpoint-service.js';
import { sampleSession } from './metrics.js';
import { removeSession, startSession } from './session-service.js';

const CheckpointRequest = z.object({ leaveRunning: z.boolean().default(false) }).strict();

function idParam(value: string | string[] | undefined, schema: z.ZodType<string>, what: string): string {
  const r = schema.safeParse(value);
  if (!r.success) throw new z.ZodError([{ code: 'custom', path: [what], message: r.error.issues[0]?.message ?? 'invalid', input: value }]);
  return r.data;
}

/** The node agent's HTTP API. Thin: parse, then hand to the services. */
export function createAgentApp(ctx: AgentContext): Express {
  const view = (s: Session): SessionView => sessionView(s, { memoryArriving: ctx.lazy.isArriving(s.id) });
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, criu: ctx.criu.version, store: ctx.store.location, sessions: ctx.registry.list().length });
  });

  app.use(bearerAuth(ctx.config.token));

  app.get('/v1/sessions', (_req, res) => {
    res.json({ sessions: ctx.registry.list().map(view) });
  });

  app.post('/v1/sessions', async (req, res) => {
    const s = await startSession(ctx, req.body ?? {});
    res.status(201).json(view(s));
  });

  app.get('/v1/sessions/:id', (req, res) => {
    res.json(view(ctx.registry.get(idParam(req.params.id, SessionId, 'id'))));
  });

  app.get('/v1/sessions/:id/progress', (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    ctx.registry.get(id);
    res.json({ progress: ctx.registry.progress(id) });
  });

  app.get('/v1/sessions/:id/metrics', async (req, res) => {
    res.json(await sampleSession(ctx.registry.get(idParam(req.params.id, SessionId, 'id'))));
  });

  app.delete('/v1/sessions/:id', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    await ctx.fences.admit(id, parseFenceHeader(req.headers[FENCE_HEADER]));
    await removeSession(ctx, id);
    res.status(204).end();
  });

  app.post('/v1/sessions/:id/checkpoint', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    const body = CheckpointRequest.parse(req.body ?? {});
    await ctx.fences.admit(id, parseFenceHeader(req.headers[FENCE_HEADER]));
    res.json(await checkpointSession(ctx, id, body));
  });

  app.get('/v1/checkpoints', async (_req, res) => {
    res.json({ checkpoints: await ctx.store.list() });
  });

  app.get('/v1/checkpoints/:id', async (req, res) => {
    const m = await ctx.store.getManifest(idParam(req.params.id, CheckpointId, 'id'));
    // The manifest holds the session's token: callers already hold the agent's.
    res.json(m);
  });

  app.post('/v1/checkpoints/:id/restore', async (req, res) => {
    const fence = parseFenceHeader(req.headers[FENCE_HEADER]);
    const { session, seconds } = await restoreCheckpoint(ctx, idParam(req.params.id, CheckpointId, 'id'), (sessionId) => ctx.fences.admit(sessionId, fence));
    res.json({ ...view(session), seconds });
  });

  app.use(errorMiddleware(ctx.log));
  return app;
}
