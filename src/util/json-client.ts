import { Readable } from 'node:stream';
import type { z } from 'zod';
import { ErrorBody, UnreachableError, UpstreamError } from '../core/errors.js';

/**
 * JSON over HTTP with a bearer token, for hubshift's own services (agent,
 * scheduler). Every answer is parsed with its schema; a peer that does not
 * answer is an UnreachableError (worth retrying), one that answers with an
 * error an UpstreamError carrying its status and error code.
 */
export class JsonClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    /** Named in messages: "agent", "scheduler". */
    private readonly peer: string,
    private readonly hint: string,
    private readonly timeoutMs: number,
  ) {}

  call<T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    return this.send(method, path, schema, body === undefined ? undefined : JSON.stringify(body), { ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers });
  }

  /** Streams `body` (never held whole in memory) and parses the JSON answer. */
  callStream<T>(method: string, path: string, schema: z.ZodType<T>, body: Readable, contentType: string, headers: Record<string, string> = {}): Promise<T> {
    return this.send(method, path, schema, Readable.toWeb(body) as ReadableStream<Uint8Array>, { 'Content-Type': contentType, ...headers });
  }

  private async send<T>(method: string, path: string, schema: z.ZodType<T>, body: string | ReadableStream<Uint8Array> | undefined, headers: Record<string, string>): Promise<T> {
    const url = new URL(path, this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${this.token}`, ...headers },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
        // A streamed request body needs half duplex (Node's fetch).
        ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      throw new UnreachableError(`${this.peer} at ${this.baseUrl} did not answer ${method} ${path}: ${(err as Error).message} (${this.hint})`);
    }
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON: reported below with the text */
    }
    if (!res.ok) {
      const e = ErrorBody.safeParse(json);
      throw new UpstreamError(e.success ? e.data.error.message : `${this.peer} answered ${res.status}: ${text.slice(0, 200)}`, res.status, e.success ? e.data.error.code : undefined);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new UpstreamError(`${this.peer} sent an unexpected answer to ${method} ${path}: ${parsed.error.issues[0]?.path.join('.')} ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }
}
