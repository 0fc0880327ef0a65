import { ConflictError } from '../core/errors.js';

/**
 * Sessions whose memory is still arriving after a lazy restore. criu reads a
 * page that has not arrived yet as one that was never touched, so a dump
 * taken meanwhile would silently lose it: every dump waits here first.
 */
export class LazyTransfers {
  private readonly inFlight = new Map<string, Promise<void>>();

  track(sessionId: string, released: Promise<void>): void {
    const done = released.finally(() => {
      if (this.inFlight.get(sessionId) === done) this.inFlight.delete(sessionId);
    });
    // Those who wait on it see a failure; nobody waiting is no unhandled rejection (which would end the agent).
    done.catch(() => undefined);
    this.inFlight.set(sessionId, done);
  }

  /** Whether a lazy restore of the session is still bringing its memory in. */
  isArriving(sessionId: string): boolean {
    return this.inFlight.has(sessionId);
  }

  /** Resolves once the session's memory is all in place, or its transfer has failed: however long that takes, never rejecting. */
  ended(sessionId: string): Promise<void> {
    const p = this.inFlight.get(sessionId);
    if (!p) return Promise.resolve();
    return p.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Resolves once the session's memory is all in place; ConflictError if that takes longer than timeoutMs. */
  async settled(sessionId: string, timeoutMs: number): Promise<void> {
    const p = this.inFlight.get(sessionId);
    if (!p) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ConflictError(`session ${sessionId}'s memory is still arriving from its last restore after ${timeoutMs / 1000} s; try again when it is complete`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
