import type { Logger } from 'pino';
import type { Decision } from '../core/decision.js';
import type { NoticeInfo } from '../core/cluster.js';
import { errorMessage } from '../core/errors.js';
import { evaluate } from '../policy/evaluate.js';
import type { PolicyHolder } from '../policy/load-policies.js';
import { duePolicies } from '../policy/schedule.js';
import type { Planned, Planner } from './planner.js';
import type { ControlState } from './state.js';

/** What a pass reads and writes: the state's snapshot and run times, the planner, the policies. */
export type LoopState = Pick<ControlState, 'lastRuns' | 'snapshot' | 'setLastRun' | 'forgetTakenNodes' | 'listNotices'>;
export type LoopPlanner = Pick<Planner, 'plan'>;
export type LoopPolicies = Pick<PolicyHolder, 'policies' | 'reload'>;

export interface PassResult {
  at: string;
  decisions: Decision[];
  planned: Planned[];
}

/**
 * Evaluates the policies over the state now and then: on a timer, and at
 * once when a notice arrives. One pass at a time; a kick during a pass runs
 * one more pass after it.
 */
export class ControlLoop {
  private timer: NodeJS.Timeout | undefined;
  /** The passes under way: the first of them, and the last (kicks during a pass add one more). */
  private running: Promise<{ first: PassResult; last: PassResult }> | undefined;
  private again = false;
  private lastReloadError: string | null = null;

  constructor(
    private readonly state: LoopState,
    private readonly planner: LoopPlanner,
    readonly policies: LoopPolicies,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    const tick = (): void => {
      void this.kick()
        .catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'evaluation pass failed'))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, this.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.intervalMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Runs a pass now (or one more right after the pass under way). */
  async kick(): Promise<PassResult> {
    if (this.running) {
      this.again = true;
      return (await this.running).last;
    }
    return (await this.runPasses(undefined)).last;
  }

  /**
   * Runs `change` between passes, then a pass: the result is what that pass,
   * the first to see the change, planned. A notice's answer names the moves
   * it led to; added while a pass ran, the notice could be acted on by that
   * pass, and the pass after it would find nothing left to plan.
   */
  async kickAfter(change: () => Promise<void>): Promise<PassResult> {
    // No await between the check and runPasses setting `running`: of callers woken together, one starts, the rest wait again.
    while (this.running) await this.running.catch(() => undefined);
    return (await this.runPasses(change)).first;
  }

  private runPasses(change: (() => Promise<void>) | undefined): Promise<{ first: PassResult; last: PassResult }> {
    const running = (async () => {
      try {
        await change?.();
        const first = await this.pass();
        let last = first;
        while (this.again) {
          this.again = false;
          last = await this.pass();
        }
        return { first, last };
      } finally {
        this.running = undefined;
      }
    })();
    this.running = running;
    return running;
  }

  /** What the policies would decide now, without acting (the dry run behind `hubshift plan`). */
  async decide(now = new Date(), notices?: NoticeInfo[]): Promise<{ decisions: Decision[]; due: string[] }> {
    const set = this.policies.policies;
    const lastRuns = await this.state.lastRuns();
    const due = duePolicies(set.policies, lastRuns, now);
    const withSamples = set.policies.some((p) => p.kind === 'rightsize' && due.includes(p.name));
    const snapshot = await this.state.snapshot(now, { withSamples, lastRuns, notices });
    return { decisions: evaluate(snapshot, set, now), due };
  }

  private async pass(): Promise<PassResult> {
    const reload = await this.policies.reload();
    if (!reload.ok && reload.error !== this.lastReloadError) this.log.error({ err: reload.error }, 'policy files refused; the last good set stays in force');
    this.lastReloadError = reload.ok ? null : reload.error;
    const now = new Date();
    // Read once for the pass: forgetting nodes leaves the notices as they are.
    const notices = await this.state.listNotices(now);
    // The cloud's own: no longer priced, placed on or planned for.
    for (const gone of await this.state.forgetTakenNodes(now, notices)) {
      this.log.warn({ node: gone.node }, 'node taken by the cloud: forgotten');
      if (gone.backToCheckpoint.length) this.log.warn({ node: gone.node, sessions: gone.backToCheckpoint }, 'sessions went with the node: back at their last checkpoint (what they did since is lost), woken on their next request');
      if (gone.failed.length) this.log.error({ node: gone.node, sessions: gone.failed }, 'sessions went with the node and have no checkpoint to go back to (or had failed already, or the node hibernated): marked failed');
    }
    const { decisions, due } = await this.decide(now, notices);
    const planned = await this.planner.plan(decisions, now);
    await Promise.all(due.map((name) => this.state.setLastRun(name, now)));
    return { at: now.toISOString(), decisions, planned };
  }

  /** The error of the last refused policy reload, if the files are bad now. */
  get policyError(): string | null {
    return this.lastReloadError;
  }
}
