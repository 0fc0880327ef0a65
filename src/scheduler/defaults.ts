import type { NodeFleet } from '../cloud/provider.js';

/*
 * The scheduler's, its queue's, workers' and state's settings and their
 * defaults, apart from the code that uses them: the CLI shows the defaults
 * in --help without loading BullMQ and the rest (a command starts in a
 * fraction of the time).
 */

export const SCHEDULER_DEFAULTS = {
  host: '127.0.0.1',
  port: 7300,
  redisUrl: 'redis://127.0.0.1:6379',
  policiesDir: 'policies',
  intervalMs: 5_000,
  workers: true,
} as const;

export interface QueueOptions {
  /** Tries of each step before its operation fails (default 5). */
  attempts: number;
  /** First retry delay; doubles each time (default 1 s). */
  backoffMs: number;
}

export const QUEUE_DEFAULTS: QueueOptions = { attempts: 5, backoffMs: 1_000 };

export interface WorkerOptions {
  /** Steps run at once by this worker (default 4). */
  concurrency: number;
  /**
   * How long a job's lock (BullMQ) and a session's lock (hubshift) last
   * without renewal: a dead worker's job is taken over after about this long
   * (default 30 s).
   */
  lockMs: number;
  /** How long a step waits for an agent still busy with an earlier attempt's call (default 10 min). */
  busyWaitMs: number;
  /** Sessions moved or checkpointed off one node at once, across all workers, for a node that registered no figure of its own (default 1: see node-lanes.ts). */
  movesPerNode: number;
  /** The cloud's side of moves and releases (EC2); unset: local hosts, where addresses need no moving. */
  fleet?: NodeFleet;
}

export const WORKER_DEFAULTS: WorkerOptions = { concurrency: 4, lockMs: 30_000, busyWaitMs: 600_000, movesPerNode: 1 };

export interface StateOptions {
  /** Usage samples kept per session (default 720: an hour at one push per 5 s). */
  sampleRetention: number;
  /** Action log entries kept (default 10 000). */
  actionRetention: number;
  /** A session's record not refreshed for this long has an owner that went quiet (default 30 s). */
  staleAfterMs: number;
  /**
   * A node whose agent has not pushed (nor registered) for this long is
   * silent: nothing is placed on it until it is heard from again (default
   * 60 s, a dozen of an agent's pushes at its default interval). A spot node
   * the cloud took stays registered; without this it would be the cheapest
   * place for every start, restore and move once its notice expired.
   */
  nodeSilentAfterMs: number;
}

export const STATE_DEFAULTS: StateOptions = { sampleRetention: 720, actionRetention: 10_000, staleAfterMs: 30_000, nodeSilentAfterMs: 60_000 };
