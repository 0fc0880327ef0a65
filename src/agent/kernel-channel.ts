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

  /**
   * Opens the channels and waits until they carry messages both ways, as
   * Jupyter's own client does: a new iopub subscription misses what the
   * kernel publishes before it has joined (zmq's slow joiner), so an execute
   * sent at once could lose its results.
   */
  static async connect(baseUrl: string, token: string, kernelId: string, timeoutMs = 10_000): Promise<KernelChannel> {
    const url = new URL(`api/kernels/${kernelId}/channels`, baseUrl);
    url.protocol = url.protocol.replace('http', 'ws');
    url.searchParams.set('token', token);
    const channel = await new Promise<KernelChannel>((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
      ws.once('open', () => resolve(new KernelChannel(ws)));
      ws.once('error', (err) => reject(new UpstreamError(`cannot open kernel ${kernelId}'s websocket at ${baseUrl}: ${err.message}`)));
    });
    try {
      await channel.handshake(timeoutMs);
    } catch (err) {
      channel.close();
      throw err;
    }
    return channel;
  }

  /** kernel_info_request, repeated every 0.5 s, until a reply on shell and a status on iopub both come back. */
  private async handshake(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const msgId = randomUUID();
      const answered = new Promise<boolean>((resolve) => {
        let reply = false;
        let iopub = false;
        const timer = setTimeout(() => {
          this.pending.delete(msgId);
          resolve(false);
        }, Math.min(500, Math.max(1, deadline - Date.now())));
        this.pending.set(msgId, (m) => {
          if (m.header.msg_type === 'kernel_info_reply') reply = true;
          if (m.header.msg_type === 'status') iopub = true;
          if (reply && iopub) {
            clearTimeout(timer);
            this.pending.delete(msgId);
            resolve(true);
          }
        });
      });
      this.send(msgId, 'kernel_info_request', {});
      if (await answered) return;
    }
    throw new TimeoutError(`the kernel's channels did not answer kernel_info within ${timeoutMs} ms`);
  }

  private send(msgId: string, msgType: string, content: Record<string, unknown>): void {
    this.ws.send(
      JSON.stringify({
        header: { msg_id: msgId, username: 'hubshift', session: this.session, msg_type: msgType, version: '5.3', date: new Date().toISOString() },
        parent_header: {},
        metadata: {},
        content,
        channel: 'shell',
        buffers: [],
      }),
    );
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
      this.send(msgId, 'execute_request', { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true });
    });
  }

  close(): void {
    this.closed = true;
    this.ws.close();
  }
}
