import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { ClusterSnapshot } from '../core/cluster.js';
import { InputError, describeZodIssue } from '../core/errors.js';
import type { Decision } from '../core/decision.js';
import { printResult } from './output.js';
import { schedulerClient } from './scheduler-client-options.js';

async function readSnapshot(path: string): Promise<ClusterSnapshot> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new InputError(`cannot read the snapshot ${path}: ${(err as Error).message}`);
  }
  const parsed = ClusterSnapshot.safeParse(json);
  if (!parsed.success) throw new InputError(`snapshot ${path} is invalid at ${describeZodIssue(parsed.error)}`);
  return parsed.data;
}

export function registerPlanCommand(program: Command): void {
  program
    .command('plan')
    .description('dry run: what the policies would decide now, each decision with its policy, reason and cost effect')
    .option('--snapshot <file>', 'a cluster snapshot (JSON: nodes, sessions, notices, inFlight, instanceTypes, lastRuns)')
    .option('--scheduler <url>', "or ask a running scheduler (its state, its policies)")
    .option('--token-file <file>', "the scheduler's bearer token (with --scheduler)")
    .option('--policies <dir>', 'policy files (with --snapshot)', 'policies')
    .option('--at <time>', 'evaluate as of this ISO time (default: now)')
    .option('--json', 'print one JSON object', false)
    .action(async (o: { snapshot?: string; scheduler?: string; tokenFile?: string; policies: string; at?: string; json: boolean }) => {
      if (Boolean(o.snapshot) === Boolean(o.scheduler)) throw new InputError('give one of --snapshot FILE and --scheduler URL');
      let now = o.at ? new Date(o.at) : new Date();
      if (Number.isNaN(now.getTime())) throw new InputError(`--at ${o.at} is not a time (use ISO 8601, e.g. 2026-11-24T03:00:00Z)`);
      let decisions: Decision[];
      if (o.scheduler) {
        if (!o.tokenFile) throw new InputError('--scheduler needs --token-file');
        if (o.at) throw new InputError('--at works with --snapshot only: a scheduler plans for now');
        const r = await (await schedulerClient({ scheduler: o.scheduler, tokenFile: o.tokenFile })).plan();
        decisions = r.decisions;
        now = new Date(r.at);
      } else {
        // The policy engine loads only where it is asked for (main.ts keeps commands' start-up light).
        const [{ evaluate }, { loadPolicyDir }] = await Promise.all([import('../policy/evaluate.js'), import('../policy/load-policies.js')]);
        decisions = evaluate(await readSnapshot(o.snapshot as string), await loadPolicyDir(o.policies), now);
      }
      const saving = decisions.reduce((a, d) => a + d.costPerHour, 0);
      printResult(o.json, { at: now.toISOString(), decisions, costPerHour: saving }, () =>
        decisions.length === 0
          ? 'nothing to do'
          : [
              ...decisions.map((d) => `${d.action.padEnd(12)} ${(d.sessionId ?? d.source ?? '').padEnd(12)} ${d.target ? `-> ${d.target} ` : ''}[${d.policy}] ${d.reason} (${d.costPerHour <= 0 ? 'saves' : 'costs'} $${Math.abs(d.costPerHour).toFixed(4)}/h)`),
              `in all: ${saving <= 0 ? 'saves' : 'costs'} $${Math.abs(saving).toFixed(4)}/h`,
            ].join('\n'),
      );
    });
}
