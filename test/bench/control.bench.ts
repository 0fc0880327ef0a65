import { join } from 'node:path';
import { evaluate } from '../../src/policy/evaluate.js';
import { loadPolicyDir } from '../../src/policy/load-policies.js';
import { syntheticCluster } from './synthetic-cluster.js';
import { median } from './median.js';

export interface EvaluationFigures {
  /** nightly: the rightsize schedule is due (the heaviest pass); regular: any other pass. */
  pass: 'nightly' | 'regular';
  sessions: number;
  nodes: number;
  decisions: number;
  /** Median and slowest of the timed runs, milliseconds. */
  medianMs: number;
  maxMs: number;
}

/**
 * Evaluation time of the shipped policies over synthetic clusters: at 03:00
 * UTC, when the nightly rightsize runs too (the heaviest pass), and at 03:30,
 * a regular pass. Outside quiet hours, with budgets raised so every method
 * does its full work. Three untimed passes first warm the JIT up.
 */
export async function benchEvaluation(shapes: Array<[number, number]>, runs = 7): Promise<EvaluationFigures[]> {
  const set = await loadPolicyDir(join(import.meta.dirname, '../../policies'));
  const heavy = { ...set, guards: { ...set.guards, budgets: { perNode: 1_000, total: 1_000_000 } } };
  const out: EvaluationFigures[] = [];
  for (const [sessions, nodes] of shapes) for (const pass of ['nightly', 'regular'] as const) {
    const now = new Date(pass === 'nightly' ? '2026-11-24T03:00:00Z' : '2026-11-24T03:30:00Z');
    const snap = syntheticCluster(sessions, nodes, now);
    const times: number[] = [];
    let decisions = 0;
    // A scheduler evaluates every few seconds for as long as it runs: time the warm code, as it runs there.
    for (let i = 0; i < 3; i++) evaluate(snap, heavy, now);
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      decisions = evaluate(snap, heavy, now).length;
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    out.push({ pass, sessions, nodes, decisions, medianMs: median(times), maxMs: times.at(-1) as number });
  }
  return out;
}
