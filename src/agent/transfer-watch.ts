import { errorMessage } from '../core/errors.js';
import { sleep } from '../util/exec.js';
import type { AgentContext } from './agent-context.js';

export interface TransferWatch {
  /** Polled every intervalMs: a TCP byte counter of the transfer, null while it has no connection. */
  read: () => Promise<number | null>;
  intervalMs: number;
  /** Called once when the counter has not grown for the move's idle timeout; the watch then ends. */
  onStall: (last: number | null) => unknown;
  onProgress?: (bytes: number) => void;
  /** Checked before each read: true ends the watch (it has acted itself). */
  ended?: () => Promise<boolean>;
  /** What the watch is of, for its log. */
  what: string;
}

/**
 * Watches a move's memory transfer until `done` resolves or the agent stops:
 * a TCP connection that carries nothing while the link is dead never fails by
 * itself, so whoever waits on it must give up after `--move-idle-timeout`.
 * Returns a function that ends the watch.
 */
export function watchTransfer(ctx: AgentContext, id: string, done: Promise<unknown>, w: TransferWatch): () => void {
  let over = false;
  void done.then(() => (over = true), () => (over = true));
  void (async () => {
    let last: number | null = null;
    let since = performance.now();
    while (!over) {
      await sleep(w.intervalMs, ctx.stopping.signal).catch(() => undefined);
      if (over || ctx.stopping.signal.aborted) return;
      if (w.ended && (await w.ended())) return;
      const bytes = await w.read();
      if (over) return;
      if (bytes !== null && bytes !== last) {
        last = bytes;
        since = performance.now();
        w.onProgress?.(bytes);
      } else if (performance.now() - since > ctx.config.moveIdleTimeoutMs) {
        await w.onStall(last);
        return;
      }
    }
  })().catch((err: unknown) => ctx.log.error({ session: id, err: errorMessage(err) }, `watching ${w.what} failed`));
  return () => void (over = true);
}
