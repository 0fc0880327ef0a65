import { z } from 'zod';

export const DecisionAction = z.enum([
  /** Freeze to the store and stop. */
  'checkpoint',
  /** Freeze to the store and keep running (prepare for a move). */
  'snapshot',
  /** Move a running session to another node. */
  'migrate',
  /** Empty node: hand it back to the cloud. */
  'release-node',
]);
export type DecisionAction = z.infer<typeof DecisionAction>;

/**
 * What a policy wants done, with why. Derived from the snapshot alone; the
 * planner turns it into jobs and a command is validated again before it runs.
 */
export const Decision = z.object({
  action: DecisionAction,
  sessionId: z.string().nullable(),
  /** The node the session (or the released node) is on. */
  source: z.string().nullable(),
  /** The node it moves to; null when it goes to the store or nowhere. */
  target: z.string().nullable(),
  policy: z.string(),
  reason: z.string(),
  /** Estimated change in cost, USD per hour: negative saves. */
  costPerHour: z.number(),
  /** Act before this time (evictions). */
  deadline: z.string().nullable(),
  /**
   * A move under a deadline: the latest it may start and, by the planner's
   * estimate, still end in time. A worker that gets to it later (the moves
   * before it ran long) checkpoints the session to the store instead.
   */
  startBy: z.string().datetime({ offset: true }).optional(),
});
export type Decision = z.infer<typeof Decision>;
