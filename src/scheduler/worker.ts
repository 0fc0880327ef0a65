import { Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { JobData, type Operation } from '../core/control.js';
import { errorMessage } from '../core/errors.js';
import { actionRecord } from './action-record.js';
import { OPS_QUEUE, QUEUE_PREFIX } from './keys.js';
import { WORKER_DEFAULTS, type WorkerOptions } from './defaults.js';
import { closeRedis, connectRedis } from './redis.js';
import { NodeLanes } from './node-lanes.js';
import { SessionLocks } from './session-lock.js';
import { CheckpointedInstead, runStep, type StepContext } from './steps.js';
import type { ControlState } from './state.js';

/** Settles an operation whose last step finished or which failed for good: its claim ends, the log says how. */
async function settle(state: ControlState, op: Operation, outcome: 'done' | 'failed', detail: string | null, instead = false): Promise<void> {
  await state.recordAction(actionRecord(op, outcome, detail, new Date(), instead));
  await state.release(op);
}

export interface RunningWorker {
  worker: Worker;
  close(): Promise<void>;
}

/**
 * A worker: takes steps off the operations queue and carries them out
 * through the agents. A worker that dies mid-step loses its job's lock; the
 * job is then stalled and another worker runs the step again, which is safe
 * because every step is idempotent.
 */
export function startWorker(redisUrl: string, state: ControlState, log: Logger, options: Partial<WorkerOptions> = {}): RunningWorker {
  const o = { ...WORKER_DEFAULTS, ...options };
  const connection = connectRedis(redisUrl, 'hubshift-worker');
  const ctx: StepContext = { state, locks: new SessionLocks(connection, o.lockMs), lanes: new NodeLanes(connection, o.movesPerNode, o.lockMs), log, busyWaitMs: o.busyWaitMs, fleet: o.fleet };
  const worker = new Worker(
    OPS_QUEUE,
    async (job: Job) => {
      const data = JobData.parse(job.data);
      log.info({ job: job.id, step: data.step, session: data.op.sessionId, attempt: job.attemptsMade + 1 }, 'step started');
      const result = await runStep(ctx, data);
      if (data.step === 'finish' || data.step === 'release') {
        // A move reached too late went to the store instead: the log says so (and the ledger puts the session's cost down to a checkpoint).
        const instead = CheckpointedInstead.safeParse(result);
        await settle(state, data.op, 'done', instead.success ? instead.data.instead : null, instead.success);
      }
      return result;
    },
    {
      connection,
      prefix: QUEUE_PREFIX,
      concurrency: o.concurrency,
      lockDuration: o.lockMs,
      stalledInterval: o.lockMs,
      // A migration may outlive more than one dead worker before it completes.
      maxStalledCount: 5,
    },
  );
  worker.on('failed', (job, err) => {
    if (!job) return;
    const parsed = JobData.safeParse(job.data);
    if (!parsed.success) return;
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    log.warn({ job: job.id, step: parsed.data.step, session: parsed.data.op.sessionId, err: errorMessage(err), final }, 'step failed');
    if (final) void settle(state, parsed.data.op, 'failed', `${parsed.data.step}: ${errorMessage(err)}`).catch((e: unknown) => log.error({ err: errorMessage(e) }, 'could not settle a failed operation'));
  });
  worker.on('error', (err) => log.warn({ err: errorMessage(err) }, 'worker connection error'));
  return {
    worker,
    close: async () => {
      await worker.close();
      await closeRedis(connection);
    },
  };
}
