import { z } from 'zod';
import { CheckpointManifest, CheckpointResult, MoveResult, PageServerAt, type MoveMode } from '../core/checkpoint.js';
import { UpstreamError } from '../core/errors.js';
import { JsonClient } from '../util/json-client.js';
import { OperationProgress, SessionView } from '../core/session.js';
import { MOVE_CONTENT_TYPE } from '../images/move-stream.js';
import { FENCE_HEADER } from './fences.js';

export const RestoreResult = SessionView.extend({ seconds: z.number() });
// pushedBytes: the memory a stop-and-copy source's criu pushed to the target's page server (absent from older agents).
export const IncomingResult = SessionView.extend({ verifySeconds: z.number(), restoreSeconds: z.number(), pushedBytes: z.number().int().nonnegative().optional() });

/** A node agent's API, as the CLI and the scheduler call it. Every answer is parsed. */
export class AgentClient {
  private readonly http: JsonClient;
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    timeoutMs = 600_000,
  ) {
    this.http = new JsonClient(baseUrl, token, 'agent', 'is hubshift agent running there?', timeoutMs);
  }

  private call<T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown, fence?: number): Promise<T> {
    return this.http.call(method, path, schema, body, fence === undefined ? {} : { [FENCE_HEADER]: String(fence) });
  }

  health() {
    // postCopy: absent from agents older than post-copy moves.
    return this.call('GET', 'healthz', z.object({ ok: z.boolean(), criu: z.string(), store: z.string(), sessions: z.number(), postCopy: z.boolean().optional() }));
  }
  listSessions() {
    return this.call('GET', 'v1/sessions', z.object({ sessions: z.array(SessionView) })).then((r) => r.sessions);
  }
  startSession(user: string, env: Record<string, string> = {}, avoidAddresses: string[] = []) {
    return this.call('POST', 'v1/sessions', SessionView, { user, env, ...(avoidAddresses.length > 0 ? { avoidAddresses } : {}) });
  }
  getSession(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}`, SessionView);
  }
  /** The session, or null when this agent does not know it. `timeoutMs`: give up sooner than the client's default. */
  findSession(id: string, timeoutMs?: number): Promise<SessionView | null> {
    return this.within(timeoutMs).getSession(id).catch((err: unknown) => {
      if (err instanceof UpstreamError && err.status === 404) return null;
      throw err;
    });
  }
  /** Whether this agent, or one it moved the session on to (up to `hops` further), still holds the session. */
  holdsSession(id: string, hops: number) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}/held?hops=${hops}`, z.object({ held: z.boolean() })).then((r) => r.held);
  }
  metrics(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}/metrics`, z.record(z.string(), z.unknown()));
  }
  /** The step and bytes of the operation under way on a session, or null. */
  progress(id: string) {
    return this.call('GET', `v1/sessions/${encodeURIComponent(id)}/progress`, z.object({ progress: OperationProgress.nullable() })).then((r) => r.progress);
  }
  /** `fence`: the session lock's fencing token, when a scheduler worker calls. */
  removeSession(id: string, fence?: number) {
    return this.call('DELETE', `v1/sessions/${encodeURIComponent(id)}`, z.null(), undefined, fence);
  }
  checkpoint(id: string, leaveRunning = false, fence?: number) {
    return this.call('POST', `v1/sessions/${encodeURIComponent(id)}/checkpoint`, CheckpointResult, { leaveRunning }, fence);
  }
  /** Asks this (source) agent to move a session to another agent. */
  move(id: string, target: { url: string; token: string }, mode: MoveMode = 'auto', fence?: number, opts: { precopy?: boolean } = {}) {
    return this.call('POST', `v1/sessions/${encodeURIComponent(id)}/move`, MoveResult, { target, mode, ...opts }, fence);
  }
  /**
   * Streams a dumped session in (this agent is the target); it is restored
   * stopped until committed. `idleTimeoutMs`: how long the connection may
   * stall (a cut link) before the move is given up.
   */
  /** Opens a move to this agent: the caller writes the move stream into `body`; `answer` is the target's once it has restored the session stopped. */
  openMove(fence?: number, idleTimeoutMs = 30_000) {
    return this.http.openStream('POST', 'v1/incoming', IncomingResult, MOVE_CONTENT_TYPE, fence === undefined ? {} : { [FENCE_HEADER]: String(fence) }, idleTimeoutMs);
  }
  /** Asks this agent to receive a session's memory from the source's criu dump: where its page server listens. */
  openPageServer(id: string, fence?: number) {
    return this.call('POST', `v1/incoming/${encodeURIComponent(id)}/pages`, PageServerAt, undefined, fence);
  }
  /** `timeoutMs`: give up sooner than the client's default. */
  commitMove(id: string, fence?: number, timeoutMs?: number) {
    return this.within(timeoutMs).call('POST', `v1/incoming/${encodeURIComponent(id)}/commit`, SessionView, undefined, fence);
  }
  /** `timeoutMs`: give up sooner than the client's default. */
  abortMove(id: string, timeoutMs?: number) {
    return this.within(timeoutMs).call('DELETE', `v1/incoming/${encodeURIComponent(id)}`, z.null());
  }
  /** This client, or one to the same agent that gives up after `timeoutMs`. */
  private within(timeoutMs: number | undefined): AgentClient {
    return timeoutMs === undefined ? this : new AgentClient(this.baseUrl, this.token, timeoutMs);
  }
  listCheckpoints() {
    return this.call('GET', 'v1/checkpoints', z.object({ checkpoints: z.array(z.string()) })).then((r) => r.checkpoints);
  }
  manifest(id: string) {
    return this.call('GET', `v1/checkpoints/${encodeURIComponent(id)}`, CheckpointManifest);
  }
  restore(checkpoint: string, fence?: number) {
    return this.call('POST', `v1/checkpoints/${encodeURIComponent(checkpoint)}/restore`, RestoreResult, undefined, fence);
  }
}
