import { z } from 'zod';
import { CheckpointManifest, CheckpointResult } from '../core/checkpoint.js';
import { ErrorBody, UpstreamError } from '../core/errors.js';
import { OperationProgress, SessionView } from '../core/session.js';

export const RestoreResult = SessionView.extend({ seconds: z.number() });

/** A node agent's API, as the CLI and the scheduler call it. Every answer is parsed. */
export class AgentClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 600_000,
  ) {}

  private async call<T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown): Promise<T> {
    const url = new URL(path, this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new UpstreamError(`agent at ${this.baseUrl} did not answer ${method} ${path}: ${(err as Error).message} (is hubshift agent running there?)`);
    }
    const text = await res.text();
    const json: unknown = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const e = ErrorBody.safeParse(json);
      throw new UpstreamError(e.success ? e.data.error.message : `agent answered ${res.status}: ${text.slice(0, 200)}`, res.status, e.success ? e.data.error.code : undefined);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new UpstreamError(`agent sent an unexpected answer to ${method} ${path}: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  health() {
    return this.call('GET', 'healthz', z.object({ ok: z.boolean(), criu: z.string(), store: z.string(), sessions: z.number() }));
  }
  listSessions() {
    return this.call('GET', 'v1/sessions', z.object({ sessions: z.array(SessionView) })).then((r) => r.sessions);
  }
  startSession(user: string, env: Record<string, string> = {}) {
    return this.call('POST', 'v1/sessions', SessionView, { user, env });
  }
  getSession(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}`, SessionView);
  }
  metrics(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}/metrics`, z.record(z.string(), z.unknown()));
  }
  /** The step and bytes of the operation under way on a session, or null. */
  progress(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}/progress`, z.object({ progress: OperationProgress.nullable() })).then((r) => r.progress);
  }
  removeSession(id: string) {
    return this.call('DELETE', `v1/sessions/${encodeURIComponent(id)}`, z.null());
  }
  checkpoint(id: string, leaveRunning = false) {
    return this.call('POST', `v1/sessions/${encodeURIComponent(id)}/checkpoint`, CheckpointResult, { leaveRunning });
  }
  listCheckpoints() {
    return this.call('GET', 'v1/checkpoints', z.object({ checkpoints: z.array(z.string()) })).then((r) => r.checkpoints);
  }
  manifest(id: string) {
    return this.call('GET', `v1/checkpoints/${encodeURIComponent(id)}`, CheckpointManifest);
  }
  restore(checkpoint: string) {
    return this.call('POST', `v1/checkpoints/${encodeURIComponent(checkpoint)}/restore`, RestoreResult);
  }
}
