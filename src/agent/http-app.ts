import { isIP } from 'node:net';
import express, { type Express } from 'express';
import { z } from 'zod';
import { CheckpointId, InputError, MoveMode, SessionId, sessionView, type Session, type SessionView } from '../core/index.js';
import { bearerAuth } from '../api/bearer-auth.js';
import { errorMiddleware } from '../api/error-middleware.js';
import type { AgentContext } from './agent-context.js';
import { FENCE_HEADER, parseFenceHeader } from './fences.js';
import { checkpointSession } from './dump-service.js';
import { restoreCheckpoint } from './restore-service.js';
import { sampleSession } from './metrics.js';
import { abortIncoming, commitIncoming, receiveIncoming } from './incoming-service.js';
import { openPushedPages } from './pushed-pages.js';
import { moveSession, postCopyHere } from './move-service.js';
import { MOVE_CONTENT_TYPE } from '../images/move-stream.js';
import { removeSession, startSession } from './session-service.js';
import { HOLDER_HOPS, holdsSession } from './address-holders.js';

const CheckpointRequest = z.object({ leaveRunning: z.boolean().default(false) }).strict();
const MoveRequest = z
  .object({
    target: z.object({ url: z.string().url(), token: z.string().min(16) }).strict(),
    mode: MoveMode.default('auto'),
    /** Post-copy: send the eager memory ahead while the session runs (default: the agent's --no-post-copy-precopy decides). */
    precopy: z.boolean().optional(),
  })
  .strict();

const HeldQuery = z.object({ hops: z.coerce.number().int().min(0).max(HOLDER_HOPS).default(0) });

function idParam(value: string | string[] | undefined, schema: z.ZodType<string>, what: string): string {
  const r = schema.safeParse(value);
  if (!r.success) throw new z.ZodError([{ code: 'custom', path: [what], message: r.error.issues[0]?.message ?? 'invalid', input: value }]);
  return r.data;
}

/** The node agent's HTTP API. Thin: parse, then hand to the services. */
export function createAgentApp(ctx: AgentContext): Express {
  const view = (s: Session): SessionView => sessionView(s, { memoryArriving: ctx.lazy.isArriving(s.id), memoryCollapsing: ctx.hugePages.isCollapsing(s.id) });
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, criu: ctx.criu.version, store: ctx.store.location, sessions: ctx.registry.list().length, postCopy: postCopyHere(ctx) });
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

  // Asked by an agent that moved the session here, before it gives the session's address to another.
  app.get('/v1/sessions/:id/held', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    const { hops } = HeldQuery.parse(req.query);
    res.json({ held: await holdsSession(ctx, id, hops) });
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

  app.post('/v1/sessions/:id/move', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    const body = MoveRequest.parse(req.body ?? {});
    const fence = parseFenceHeader(req.headers[FENCE_HEADER]);
    await ctx.fences.admit(id, fence);
    res.json(await moveSession(ctx, id, { ...body, fence }));
  });

  app.post('/v1/incoming', async (req, res) => {
    if (!req.is(MOVE_CONTENT_TYPE)) throw new InputError(`a move is sent as ${MOVE_CONTENT_TYPE} (a move stream from another agent)`);
    // A source that vanished mid-stream (a cut link) must not hold this request open for ever.
    req.setTimeout(ctx.config.moveIdleTimeoutMs * 2, () => req.destroy(new Error('the move stream stalled')));
    const fence = parseFenceHeader(req.headers[FENCE_HEADER]);
    const r = await receiveIncoming(ctx, req, (sessionId) => ctx.fences.admit(sessionId, fence));
    res.json({ ...view(r.session), verifySeconds: r.verifySeconds, restoreSeconds: r.restoreSeconds, pushedBytes: r.pushedBytes });
  });

  app.post('/v1/incoming/:id/pages', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    await ctx.fences.admit(id, parseFenceHeader(req.headers[FENCE_HEADER]));
    // The page server listens on this node's address toward the source: the one it reached this agent from.
    const peer = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    if (!isIP(peer)) throw new InputError(`cannot tell the source's address from ${JSON.stringify(req.socket.remoteAddress)}`);
    res.json(await openPushedPages(ctx, id, peer));
  });

  app.post('/v1/incoming/:id/commit', async (req, res) => {
    const id = idParam(req.params.id, SessionId, 'id');
    await ctx.fences.admit(id, parseFenceHeader(req.headers[FENCE_HEADER]));
    res.json(view(await commitIncoming(ctx, id)));
  });

  app.delete('/v1/incoming/:id', async (req, res) => {
    await abortIncoming(ctx, idParam(req.params.id, SessionId, 'id'));
    res.status(204).end();
  });

  app.use(errorMiddleware(ctx.log));
  return app;
}
