import { z } from 'zod';
import { UpstreamError, fetchFailure } from '../core/errors.js';

export const JupyterStatus = z.object({
  started: z.string(),
  last_activity: z.string(),
  connections: z.number().int(),
  kernels: z.number().int(),
});
export type JupyterStatus = z.infer<typeof JupyterStatus>;

export const JupyterKernel = z.object({
  id: z.string(),
  name: z.string(),
  last_activity: z.string(),
  execution_state: z.string(),
  connections: z.number().int(),
});
export type JupyterKernel = z.infer<typeof JupyterKernel>;

/** A Jupyter server's REST API, reached at its own address with its token. */
export class JupyterRest {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 5_000,
  ) {}

  private async request<T>(method: string, path: string, schema: z.ZodType<T>, body?: unknown, signal?: AbortSignal): Promise<T> {
    const url = new URL(path.replace(/^\//, ''), this.baseUrl);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const res = await fetch(url, {
      method,
      // No kept-alive connection: the address may be another server's by the next request (a session checkpointed,
      // moved or removed, and its address given to a new one), and a request sent on the old server's connection
      // is answered with a reset (ECONNRESET) that a POST cannot safely be retried on.
      headers: { Authorization: `token ${this.token}`, 'Content-Type': 'application/json', Connection: 'close' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    }).catch((err: unknown) => {
      throw new UpstreamError(`Jupyter server at ${this.baseUrl} did not answer ${method} ${path}: ${fetchFailure(err)}`);
    });
    const text = await res.text();
    if (!res.ok) throw new UpstreamError(`Jupyter server answered ${method} ${path} with ${res.status}: ${text.slice(0, 200)}`, res.status >= 500 ? 502 : res.status);
    const parsed = schema.safeParse(text ? JSON.parse(text) : null);
    if (!parsed.success) throw new UpstreamError(`Jupyter server sent an unexpected ${method} ${path} answer: ${parsed.error.message}`);
    return parsed.data;
  }

  status(signal?: AbortSignal): Promise<JupyterStatus> {
    return this.request('GET', '/api/status', JupyterStatus, undefined, signal);
  }

  /** The kernels; asked without counting as the user's activity (the server would otherwise never look idle to hubshift's own polling). */
  kernels(): Promise<JupyterKernel[]> {
    return this.request('GET', '/api/kernels?no_track_activity=1', z.array(JupyterKernel));
  }

  startKernel(name = 'python3'): Promise<JupyterKernel> {
    return this.request('POST', '/api/kernels', JupyterKernel, { name });
  }

  /** Whether the server answers at all (any HTTP answer counts). */
  async answers(timeoutMs = 1_000): Promise<boolean> {
    try {
      await fetch(new URL('api', this.baseUrl), { signal: AbortSignal.timeout(timeoutMs) });
      return true;
    } catch {
      return false;
    }
  }
}
