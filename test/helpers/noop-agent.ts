import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { newCheckpointId } from '../../src/core/ids.js';
import type { SessionView } from '../../src/core/session.js';

export interface NoopAgent {
  url: string;
  token: string;
  /** Adds a running session it will report. */
  add(id: string, user: string): void;
  /** Called on every call that would change something (checkpoint, restore, remove). */
  onChange: ((what: string) => void) | undefined;
  close(): Promise<void>;
}

/** Every no-op agent of this process by URL: a move hands the session to its target in memory. */
const running = new Map<string, NoopAgent>();

/**
 * An agent's API answering at once, with no criu and no Jupyter behind it:
 * for measuring the control plane itself (queue, workers, Redis) in the
 * benchmarks. It keeps just enough state (running / checkpointed, the last
 * checkpoint) for idempotent steps to read back.
 */
export async function startNoopAgent(token = 'noop-agent-token-0123456789'): Promise<NoopAgent> {
  const sessions = new Map<string, SessionView>();
  const app = express();
  app.use(express.json());
  const agent: NoopAgent = {
    url: '',
    token,
    onChange: undefined,
    add(id, user) {
      sessions.set(id, { id, user, state: 'running', url: `http://10.0.0.2:8888/`, token: 'x'.repeat(32), pid: 1, lastCheckpoint: null, error: null, memoryArriving: false, memoryCollapsing: false });
    },
    close: async () => undefined,
  };
  const notFound = (res: express.Response, id: string): void => {
    res.status(404).json({ error: { code: 'not_found', message: `no session ${id}` } });
  };
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/v1/sessions/:id', (req, res) => {
    const s = sessions.get(req.params.id);
    if (s) res.json(s);
    else notFound(res, req.params.id);
  });
  app.post('/v1/sessions/:id/checkpoint', (req, res) => {
    agent.onChange?.(`checkpoint ${req.params.id}`);
    const s = sessions.get(req.params.id);
    if (!s) return notFound(res, req.params.id);
    const checkpoint = newCheckpointId();
    sessions.set(s.id, { ...s, state: req.body?.leaveRunning ? 'running' : 'checkpointed', lastCheckpoint: checkpoint, pid: null });
    res.json({ checkpoint, bytes: 0, seconds: 0 });
  });
  app.post('/v1/sessions/:id/move', (req, res) => {
    agent.onChange?.(`move ${req.params.id}`);
    const s = sessions.get(req.params.id);
    const target = running.get(String(req.body?.target?.url ?? ''));
    if (!s) return notFound(res, req.params.id);
    if (!target) return void res.status(502).json({ error: { code: 'unreachable', message: 'no no-op agent at the target url' } });
    sessions.delete(s.id);
    target.add(s.id, s.user);
    res.json({ id: s.id, url: s.url, mode: 'stop-and-copy', downtimeSeconds: 0, frozenAt: new Date().toISOString(), dumpStartedAt: new Date().toISOString(), seconds: 0, bytes: 0, target: target.url });
  });
  app.delete('/v1/sessions/:id', (req, res) => {
    agent.onChange?.(`remove ${req.params.id}`);
    sessions.delete(req.params.id);
    res.status(204).end();
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  agent.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  running.set(agent.url, agent);
  agent.close = () =>
    new Promise<void>((resolve) => {
      running.delete(agent.url);
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return agent;
}
