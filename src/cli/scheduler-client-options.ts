import type { Command } from 'commander';
import { InputError } from '../core/errors.js';
import type { OperationStatus, SchedulerClient } from '../scheduler/scheduler-client.js';
import { sleep } from '../util/exec.js';
import { Progress } from './output.js';
import { readTokenFile } from './token-file.js';

export interface SchedulerConnOpts {
  scheduler: string;
  tokenFile: string;
  json: boolean;
}

/** The options every command that talks to the scheduler takes. */
export function withSchedulerConn(cmd: Command): Command {
  return cmd
    .requiredOption('--scheduler <url>', 'the scheduler, e.g. http://127.0.0.1:7300')
    .requiredOption('--token-file <file>', "file holding the scheduler's bearer token")
    .option('--json', 'print one JSON object', false);
}

export async function schedulerClient(o: { scheduler: string; tokenFile: string }): Promise<SchedulerClient> {
  // Loaded where a command asks a scheduler: main.ts keeps start-up light.
  const { SchedulerClient } = await import('../scheduler/scheduler-client.js');
  return new SchedulerClient(o.scheduler, await readTokenFile(o.tokenFile));
}

/**
 * Follows an operation to its end with a progress line (its steps and their
 * states); returns its final status. `timeoutMs` bounds the wait.
 */
export async function followOperation(c: SchedulerClient, opId: string, quiet: boolean, timeoutMs = 30 * 60_000): Promise<OperationStatus> {
  const p = new Progress(`operation ${opId}`, quiet);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const st = await c.operation(opId);
    const line = st.steps.map((s) => `${s.step}:${s.state}${s.attemptsMade > 0 && s.state !== 'completed' ? `(try ${s.attemptsMade + 1})` : ''}`).join(' ');
    if (line !== last) p.step(line || st.status);
    last = line;
    if (st.status === 'completed' || st.status === 'failed') {
      p.done();
      return st;
    }
    if (Date.now() > deadline) throw new InputError(`operation ${opId} still ${st.status} after ${timeoutMs / 1000} s; follow it with hubshift jobs`);
    await sleep(300);
  }
}

/** The reason an operation failed, from its failed step. */
export function failureOf(st: OperationStatus): string {
  const f = st.steps.find((s) => s.state === 'failed');
  return f ? `${f.step} failed: ${f.failedReason ?? 'no reason given'}` : 'failed';
}
