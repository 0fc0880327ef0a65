import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { z } from 'zod';
import { TimeoutError, UpstreamError } from '../core/errors.js';

const KernelMessage = z.object({
  header: z.object({ msg_id: z.string(), msg_type: z.string() }).passthrough(),
  parent_header: z.object({ msg_id: z.string().optional() }).passthrough(),
  content: z.record(z.string(), z.unknown()),
  channel: z.string().optional(),
});
type KernelMessage = z.infer<typeof KernelMessage>;

export interface ExecuteResult {
  status: 'ok' | 'error';
  /** text/plain of the execute_result, if any. */
  result: string | null;
  stdout: string;
  error: { ename: string; evalue: string } | null;
}

/**
 * A kernel's websocket channels through the Jupyter server (the same path a
 * browser uses). One socket can carry many executions, so a test can hold it
 * open across a checkpoint or a move.
 */
export class KernelChannel {
  private readonly pending = new Map<string, (m: KernelMessage) => void>();
  private readonly session = randomUUID();
  private closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      let msg: KernelMessage;
      try {
        msg = KernelMessage.parse(JSON.parse(data.toString()));
      } catch {
        return; // binary buffers and messages of other shapes are not ours
      }
      const parent = msg.parent_header.msg_id;
      if (parent) this.pending.get(parent)?.(msg);
    });
    ws.on('close', () => (this.closed = true));
  }

  static connect(baseUrl: string, token: string, kernelId: string, timeoutMs = 10_000): Promise<KernelChannel> {
    const url = new URL(`api/kernels/${kernelId}/channels`, baseUrl);
    url.protocol = url.protocol.replace('http', 'ws');
    url.searchParams.set('token', token);
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
      ws.once('open', () => resolve(new KernelChannel(ws)));
      ws.once('error', (err) => reject(new UpstreamError(`cannot open kernel ${kernelId}'s websocket at ${baseUrl}: ${err.message}`)));
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  execute(code: string, timeoutMs = 60_000): Promise<ExecuteResult> {
    if (!this.isOpen) return Promise.reject(new UpstreamError('the kernel websocket is closed'));
    const msgId = randomUUID();
    const out: ExecuteResult = { status: 'ok', result: null, stdout: '', error: null };
    let replied = false;
    let idle = false;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(msgId);
        reject(new TimeoutError(`kernel did not finish executing ${JSON.stringify(code.slice(0, 40))} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(msgId, (m) => {
        const c = m.content;
        switch (m.header.msg_type) {
          case 'stream':
            out.stdout += String(c.text ?? '');
            break;
          case 'execute_result': {
            const data = c.data as Record<string, unknown> | undefined;
            out.result = typeof data?.['text/plain'] === 'string' ? data['text/plain'] : null;
            break;
          }
          case 'error':
            out.status = 'error';
            out.error = { ename: String(c.ename), evalue: String(c.evalue) };
            break;
          case 'execute_reply':
            replied = true;
            if (c.status === 'error') out.status = 'error';
            break;
          case 'status':
            if (c.execution_state === 'idle') idle = true;
            break;
        }
        if (replied && idle) {
          clearTimeout(timer);
          this.pending.delete(msgId);
          resolve(out);
        }
      });
      this.ws.send(
        JSON.stringify({
          header: { msg_id: msgId, username: 'hubshift', session: this.session, msg_type: 'execute_request', version: '5.3', date: new Date().toISOString() },
          parent_header: {},
          metadata: {},
          content: { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true },
          channel: 'shell',
          buffers: [],
        }),
      );
    });
  }

  close(): void {
    this.closed = true;
    this.ws.close();
  }
}
