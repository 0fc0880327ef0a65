import { request as httpRequest, type ClientRequest } from 'node:http';
import type { Writable } from 'node:stream';
import type { z } from 'zod';
import { ErrorBody, UnreachableError, UpstreamError, fetchFailure } from '../core/errors.js';

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

  /**
   * Starts a request whose body the caller writes into `body` and ends (a
   * large body, never held whole in memory); `answer` is the parsed JSON
   * answer. Writes are handed to the socket as they are, so a caller can
   * reuse a buffer once its write's callback has run. Through node:http
   * rather than fetch: a web stream adapter in between halved the rate of a
   * large body here. `answer` may settle before the body is ended (a peer
   * that refuses early); `body` is destroyed when the request fails.
   */
  openStream<T>(method: string, path: string, schema: z.ZodType<T>, contentType: string, headers: Record<string, string> = {}, idleTimeoutMs = this.timeoutMs): { body: Writable; answer: Promise<T> } {
    const url = this.url(path);
    let req!: ClientRequest;
    const raw = new Promise<{ status: number; text: string }>((resolve, reject) => {
      req = httpRequest(url, { method, headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': contentType, ...headers }, timeout: idleTimeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      // The socket's idle time: a cut link stalls the stream, and this ends it.
      req.on('timeout', () => req.destroy(new Error(`nothing moved on the connection for ${idleTimeoutMs / 1000} s`)));
      req.on('error', reject);
    });
    const answer = raw.then(
      (r) => this.parse(method, path, schema, r.status, r.text),
      (err: unknown) => {
        throw new UnreachableError(`${this.peer} at ${this.baseUrl} did not answer ${method} ${path}: ${fetchFailure(err)} (${this.hint})`);
      },
    );
    return { body: req, answer };
  }

  private url(path: string): URL {
    return new URL(path, this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`);
  }

  private async send<T>(method: string, path: string, schema: z.ZodType<T>, body: string | undefined, headers: Record<string, string>): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        method,
        headers: { Authorization: `Bearer ${this.token}`, ...headers },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new UnreachableError(`${this.peer} at ${this.baseUrl} did not answer ${method} ${path}: ${fetchFailure(err)} (${this.hint})`);
    }
    return this.parse(method, path, schema, res.status, await res.text());
  }

  private parse<T>(method: string, path: string, schema: z.ZodType<T>, status: number, text: string): T {
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON: reported below with the text */
    }
    if (status < 200 || status >= 300) {
      const e = ErrorBody.safeParse(json);
      throw new UpstreamError(e.success ? e.data.error.message : `${this.peer} answered ${status}: ${text.slice(0, 200)}`, status, e.success ? e.data.error.code : undefined);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new UpstreamError(`${this.peer} sent an unexpected answer to ${method} ${path}: ${parsed.error.issues[0]?.path.join('.')} ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }
}
