import { UpstreamError } from '../core/errors.js';
import type { PlacedSession } from '../core/control.js';
import type { SchedulerClient } from '../scheduler/scheduler-client.js';

/** Where the gateway learns which session serves a path, where it is now, and how to wake it. */
export interface SessionDirectory {
  /** The session whose hub prefix begins this path, or null. */
  atPath(path: string): Promise<PlacedSession | null>;
  get(id: string): Promise<PlacedSession | null>;
  /** Asks for a checkpointed session to be restored; a restore already under way is fine. */
  wake(id: string): Promise<void>;
}

/** The answer, or null where the scheduler says 404. */
function nullIfNotFound<T>(answer: Promise<T>): Promise<T | null> {
  return answer.catch((err: unknown) => {
    if (err instanceof UpstreamError && err.status === 404) return null;
    throw err;
  });
}

/**
 * The scheduler's API as the directory: the same for a gateway inside the
 * scheduler's process and one on its own, so both see what the API shows.
 */
export class SchedulerDirectory implements SessionDirectory {
  constructor(private readonly scheduler: SchedulerClient) {}

  atPath(path: string): Promise<PlacedSession | null> {
    return nullIfNotFound(this.scheduler.route(path));
  }

  get(id: string): Promise<PlacedSession | null> {
    return nullIfNotFound(this.scheduler.getSession(id));
  }

  async wake(id: string): Promise<void> {
    await this.scheduler.restore(id).catch((err: unknown) => {
      // Someone else woke it first (or it is running again): what we wanted.
      if (err instanceof UpstreamError && err.status === 409) return;
      throw err;
    });
  }
}
