import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Command } from 'commander';
import { z } from 'zod';
import { InputError } from '../core/errors.js';
import type { DelayStats, SimulationReport } from '../core/trace.js';
import { DEFAULT_CULL_AFTER_MS } from '../pricing/ledger.js';
import type { OpTimings } from '../simulator/timings.js';
import { fraction, integer, nonNegative, positiveNumber } from './args.js';
import { Progress, printResult } from './output.js';

async function readTimings(path: string | undefined): Promise<OpTimings> {
  const { DEFAULT_TIMINGS, OpTimings } = await import('../simulator/timings.js');
  if (!path) return DEFAULT_TIMINGS;
  const { loadYamlAs } = await import('../util/yaml-file.js');
  // An empty timings file means every default.
  return loadYamlAs(path, z.preprocess((v) => v ?? {}, OpTimings), 'timings');
}

const usd = (x: number): string => `$${x.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
const delay = (name: string, d: DelayStats): string => `  ${name.padEnd(20)} ${String(d.count).padStart(6)}   p50 ${d.p50.toFixed(1)} s, p95 ${d.p95.toFixed(1)} s, max ${d.max.toFixed(1)} s`;

export function describeReport(r: SimulationReport): string {
  return [
    `trace ${r.trace.start} to ${r.trace.end}: ${r.trace.users} users, ${r.trace.servers} servers, ${r.trace.events} events; seed ${r.seed}`,
    `policies: ${r.policies.join(', ')}`,
    '',
    `hubshift                 ${usd(r.cost).padStart(12)}   nodes ${usd(r.costBreakdown.nodesUsd)} (${r.costBreakdown.spotNodeHours} spot, ${r.costBreakdown.onDemandNodeHours} on-demand node-hours), store ${usd(r.costBreakdown.storeUsd)}, unused ${usd(r.costBreakdown.unusedCapacityUsd)}`,
    `always on, on-demand     ${usd(r.baselines.alwaysOnOnDemand).padStart(12)}   ${r.ratio.toFixed(1)}x hubshift`,
    `idle culling (state lost)${usd(r.baselines.idleCulling).padStart(12)}   ${r.ratioToCulling.toFixed(1)}x hubshift, ${r.culledByBaseline} servers culled`,
    '',
    'savings against always-on on-demand, by cause:',
    ...Object.entries(r.savingsByPolicy)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `  ${k.padEnd(20)} ${usd(v).padStart(12)}`),
    '',
    `lost sessions: ${r.lostSessions}`,
    `spot: ${r.spot.spotNodesLaunched} spot nodes launched, ${r.spot.poolInterruptions} pool interruptions (${r.spot.nodesInterrupted} nodes) at ${(r.spot.monthlyReclaimFraction * 100).toFixed(1)} %/month; evacuated ${r.spot.evacuated.moved} moved, ${r.spot.evacuated.checkpointed} checkpointed, ${r.spot.evacuated.lost} lost`,
    `actions: ${Object.entries(r.actions).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    'user-visible delays:   count',
    delay('wakes', r.delays.wakes),
    delay('migration downtime', r.delays.migrationDowntimes),
    delay('start, node booting', r.delays.startWaits),
    ...(r.overcommittedNodeMinutes ? [`node-minutes with memory overcommitted: ${r.overcommittedNodeMinutes}`] : []),
  ].join('\n');
}

export function registerSimulateCommands(program: Command): void {
  program
    .command('simulate')
    .description('replay a workload trace through the policies, pricing and ledger: cost against the baselines, sessions lost, delays')
    .requiredOption('--trace <file>', 'a trace (JSON Lines, see README; .gz read as gzip)')
    .option('--policies <dir>', 'policy files', 'policies')
    .option('--seed <n>', 'seed for spot interruptions and busy kernels', integer('--seed', 0), 1)
    .option('--spot-reclaim <fraction>', "share of a spot pool's capacity reclaimed per month (0 to 1; AWS Spot Advisor's figure)", fraction('--spot-reclaim'), 0.25)
    .option('--spot-price-factor <fraction>', 'spot price as a fraction of on-demand', positiveNumber('--spot-price-factor'), 0.35)
    .option('--cull-after <seconds>', "the culling baseline's idle time", nonNegative('--cull-after'), DEFAULT_CULL_AFTER_MS / 1000)
    .option('--timings <file>', 'operation times (YAML; fields in README), default: this machine\'s benchmarks')
    .option('--price-table <file>', 'on-demand prices (default: the shipped table, infra/prices/on-demand-us-east-1.yaml)')
    .option('--json', 'print the report as one JSON object', false)
    .action(async (o: { trace: string; policies: string; seed: number; spotReclaim: number; spotPriceFactor: number; cullAfter: number; timings?: string; priceTable?: string; json: boolean }) => {
      // The simulator loads only where it is asked for (main.ts keeps commands' start-up light).
      const [{ readTraceFile }, { Simulation }, { simulationCatalog }, { loadPriceTable }, { loadPolicyDir }] = await Promise.all([
        import('../simulator/trace-reader.js'),
        import('../simulator/simulate.js'),
        import('../simulator/sim-catalog.js'),
        import('../pricing/price-table.js'),
        import('../policy/load-policies.js'),
      ]);
      const progress = new Progress('simulate', false);
      progress.step(`reading ${o.trace}`);
      const trace = await readTraceFile(o.trace);
      const sim = new Simulation({
        policies: await loadPolicyDir(o.policies),
        catalog: simulationCatalog(await loadPriceTable(o.priceTable), o.spotPriceFactor),
        timings: await readTimings(o.timings),
        seed: o.seed,
        spotReclaimPerMonth: o.spotReclaim,
        spotPriceFactor: o.spotPriceFactor,
        cullAfterMs: o.cullAfter * 1000,
        onDay: (d, n) => progress.step(`day ${d} of ${n}`),
      });
      const report = sim.run(trace);
      progress.done();
      printResult(o.json, report, () => describeReport(report));
    });

  const trace = program.command('trace').description('workload traces for the simulator');
  trace
    .command('generate')
    .description('write a synthetic trace (JSON Lines) from published JupyterHub usage figures; the same options give the same file')
    .option('--users <n>', 'users on the platform', integer('--users', 1), 300)
    .option('--days <n>', 'days covered', integer('--days', 1), 30)
    .option('--seed <n>', 'random seed', integer('--seed', 0), 1)
    .option('--start <date>', 'first day (UTC midnight)', '2026-11-01')
    .option('--always-active', 'every server is in use from its start to its stop (no idle time: a control for the idle policy)', false)
    .option('--out <file>', 'write here instead of standard output')
    .action(async (o: { users: number; days: number; seed: number; start: string; alwaysActive: boolean; out?: string }) => {
      const start = new Date(/^\d{4}-\d{2}-\d{2}$/.test(o.start) ? `${o.start}T00:00:00Z` : o.start);
      if (Number.isNaN(start.getTime()) || start.getTime() % 86_400_000 !== 0) throw new InputError(`--start ${o.start} is not a date (YYYY-MM-DD)`);
      const { generateTrace, traceLines } = await import('../simulator/trace-generator.js');
      const out = o.out ? createWriteStream(o.out) : process.stdout;
      for (const line of traceLines(generateTrace({ users: o.users, days: o.days, seed: o.seed, start, alwaysActive: o.alwaysActive }))) {
        if (!out.write(`${line}\n`)) await once(out, 'drain');
      }
      if (o.out) {
        out.end();
        await once(out, 'finish');
      }
    });
}
