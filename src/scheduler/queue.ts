import { FlowProducer, Queue, type FlowJob, type Job, type JobsOptions } from 'bullmq';
import { JobData, JobView, type JobStep, type Operation } from '../core/control.js';
import { OPS_QUEUE, QUEUE_PREFIX } from './keys.js';
import { QUEUE_DEFAULTS, type QueueOptions } from './defaults.js';
import type { RedisConnection } from './redis.js';


/** The steps of each kind of operation, first to last. */
export function stepsOf(op: Operation): JobStep[] {
  switch (op.kind) {
    case 'checkpoint':
    case 'snapshot':
      return ['checkpoint', 'finish'];
    case 'restore':
      return ['restore', 'finish'];
    case 'migrate':
      // Streamed from agent to agent; the store is not on the way.
      return ['move', 'finish'];
    case 'release-node':
      return ['release'];
  }
}

/** Job ids are the operation's and the step's: adding the same operation twice adds nothing. */
export function jobId(opId: string, step: JobStep): string {
  return `${opId}-${step}`;
}

/**
 * The operations queue. An operation is a BullMQ flow whose steps run one
 * after another (in a flow, children run before their parent, so the last
 * step is the root). A step that fails for good fails the steps after it.
 */
export class OpsQueue {
  readonly queue: Queue;
  private readonly flows: FlowProducer;
  constructor(
    connection: RedisConnection,
    readonly options: QueueOptions = QUEUE_DEFAULTS,
  ) {
    this.queue = new Queue(OPS_QUEUE, { connection, prefix: QUEUE_PREFIX });
    this.flows = new FlowProducer({ connection, prefix: QUEUE_PREFIX });
  }

  private jobOptions(op: Operation, step: JobStep): JobsOptions {
    return {
      jobId: jobId(op.id, step),
      attempts: this.options.attempts,
      backoff: { type: 'exponential', delay: this.options.backoffMs },
      failParentOnFailure: true,
      // Evictions first: a lower number is taken earlier.
      priority: op.decision.deadline ? 1 : op.kind === 'restore' ? 2 : 10,
      removeOnComplete: { age: 7 * 86_400, count: 10_000 },
      removeOnFail: { age: 30 * 86_400 },
    };
  }

  async add(op: Operation): Promise<void> {
    let flow: FlowJob | undefined;
    for (const step of stepsOf(op)) {
      const data: JobData = { op, step };
      flow = { name: step, queueName: OPS_QUEUE, data, opts: this.jobOptions(op, step), children: flow ? [flow] : undefined };
    }
    if (flow) await this.flows.add(flow);
  }

  async view(job: Job): Promise<JobView> {
    const data = JobData.parse(job.data);
    return {
      id: job.id ?? '',
      operation: data.op.id,
      kind: data.op.kind,
      step: data.step,
      sessionId: data.op.sessionId,
      source: data.op.source,
      target: data.op.target,
      policy: data.op.decision.policy,
      reason: data.op.decision.reason,
      state: await job.getState(),
      attemptsMade: job.attemptsMade,
      failedReason: job.failedReason || null,
      result: job.returnvalue ?? null,
      createdAt: new Date(job.timestamp).toISOString(),
      finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    };
  }

  /** Recent jobs, newest first; `states` filters (failed, active, waiting, delayed, completed, waiting-children). */
  async list(states: string[], limit = 100): Promise<JobView[]> {
    const jobs = await this.queue.getJobs(states as Parameters<Queue['getJobs']>[0], 0, limit - 1, false);
    const views = await Promise.all(jobs.filter((j): j is Job => Boolean(j)).map((j) => this.view(j)));
    return views.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id)).slice(0, limit);
  }

  /** The steps of one operation, first to last; empty when it is unknown (or long removed). */
  async operation(op: Operation): Promise<JobView[]> {
    const out: JobView[] = [];
    for (const step of stepsOf(op)) {
      const job = await this.queue.getJob(jobId(op.id, step));
      if (job) out.push(await this.view(job));
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([this.queue.close(), this.flows.close()]);
  }
}
