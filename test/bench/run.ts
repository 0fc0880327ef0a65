// npm run bench -- [checkpoint] [control] [migrate] [wake] [options]; --help says what each does.
// Measures; asserts nothing. Every figure is printed with its ratio to the
// physical baseline measured in the same run.
import { Command, InvalidArgumentError, Option } from 'commander';
import { benchCheckpoint, type CheckpointFigures } from './checkpoint.bench.js';
import { benchEvaluation } from './control.bench.js';
import { handleInterrupts, interruptedBy } from './interrupt.js';
import { benchQueue } from './queue.bench.js';
import { BENCH_MOVE_MODES, benchMigrate, type BenchMoveMode } from './migrate.bench.js';
import { benchWake } from './wake.bench.js';
import { describeFirstTouch, type MemoryBaseline } from './memory-baseline.js';
import { median } from './median.js';
import { usageErrorsAreBadInput } from '../../src/cli/output.js';

const BENCHES = ['checkpoint', 'control', 'migrate', 'wake'] as const;
const isMode = (m: string): m is BenchMoveMode => (BENCH_MOVE_MODES as readonly string[]).includes(m);

function sizeList(value: string): number[] {
  const sizes = value.split(',').map(Number);
  if (!sizes.length || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new InvalidArgumentError('a comma-separated list of whole MiB, such as 256,1024');
  return sizes;
}

function roundCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a whole number of rounds, 1 or more');
  return n;
}

function modeList(value: string): BenchMoveMode[] {
  const modes = value.split(',');
  const unknown = modes.find((m) => !isMode(m));
  if (unknown !== undefined) throw new InvalidArgumentError(`a comma-separated list of ${BENCH_MOVE_MODES.join(', ')}; got ${JSON.stringify(unknown)}`);
  return modes.filter(isMode);
}

const program = usageErrorsAreBadInput(new Command('npm run bench --'))
  .description(
    'Measure hubshift against the physical baselines of this machine, taken in the same run; prints each figure and its ratio, asserts nothing. ' +
      'Benches: checkpoint (checkpoint and restore of a kernel holding each size, against a disk write and read of the same bytes), ' +
      'control (policy evaluation over synthetic clusters; spot notice to the first agent call and queue throughput against a real Redis), ' +
      'migrate (moves between two local test hosts in each mode, against the same bytes copied over the same link), ' +
      'wake (a checkpointed session woken through a real hub, against a cold start). Ctrl-C stops everything the bench started.',
  )
  .argument('[benches...]', `which to run, of ${BENCHES.join(', ')}`, ['checkpoint'])
  .option('--sizes <MiB,...>', 'kernel sizes for checkpoint and migrate (default 256,1024,2048) and wake (default 256,1024)', sizeList)
  .option('--rounds <n>', 'checkpoint: checkpoints (each followed by its restore) per size; migrate: moves per size and mode, alternately there and back; median and range printed past two', roundCount, 2)
  .addOption(new Option('--modes <mode,...>', `migrate: the modes, in this order, of ${BENCH_MOVE_MODES.join(', ')}`).argParser(modeList).default([...BENCH_MOVE_MODES], BENCH_MOVE_MODES.join(',')))
  .option('--keep-logs <dir>', "migrate: copy the hosts' logs (the agents' own, at info, and criu's) into dir before the hosts are removed")
  .option('--json', 'print one JSON object of every figure on stdout, and no progress', false)
  .action((benches: string[]) => {
    const unknown = benches.find((b) => !(BENCHES as readonly string[]).includes(b));
    if (unknown !== undefined) program.error(`error: unknown bench ${JSON.stringify(unknown)}; known: ${BENCHES.join(', ')}`, { exitCode: 2 });
  });
program.parse();
const opts = program.opts<{ sizes?: number[]; rounds: number; modes: BenchMoveMode[]; keepLogs?: string; json: boolean }>();
const which: string[] = program.processedArgs[0] as string[];
const json = opts.json;
const sizes = opts.sizes ?? [256, 1024, 2048];
const log = (m: string): void => {
  if (!json) process.stderr.write(`bench: ${m}\n`);
};
handleInterrupts((m) => process.stderr.write(`bench: ${m}\n`));

/** Seconds as a median and a range. */
const spread = (xs: number[]): string => `median ${median(xs).toFixed(2)} s (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;

const mbps = (bytesPerSecond: number): string => `${(bytesPerSecond / 2 ** 20).toFixed(0)} MiB/s`;

/** The machine's memory speed in this run, before and after the rounds (what criu's fill of a restore runs at). */
function firstTouchLine(t: { before: MemoryBaseline; after: MemoryBaseline }): string {
  return `baseline first touch of fresh memory: ${describeFirstTouch(t.before)} before the rounds, ${describeFirstTouch(t.after)} after`;
}

function printCheckpoint(f: CheckpointFigures): void {
  const b = f.baseline;
  console.log(`\ncheckpoint, kernel holding ${f.sizeMiB} MiB (image ${(f.rounds[0]!.imageBytes / 2 ** 20).toFixed(0)} MiB)`);
  const c = f.coldBaseline;
  console.log(`  baseline (best of 2): write+fsync ${b.writeSeconds.toFixed(2)} s (${mbps(b.writeBytesPerSecond)}), cold read ${b.readSeconds.toFixed(2)} s (${mbps(b.readBytesPerSecond)})`);
  console.log(`  baseline in cold guest memory: write+fsync ${c.writeSeconds.toFixed(2)} s (${mbps(c.writeBytesPerSecond)}), read ${c.readSeconds.toFixed(2)} s (${mbps(c.readBytesPerSecond)})`);
  const d = f.directWriteBytesPerSecond;
  console.log(`  baseline past the page cache (O_DIRECT, as the checkpoint writes memory): write+fdatasync ${(f.rounds[0]!.imageBytes / d).toFixed(2)} s (${mbps(d)})`);
  console.log(`  ${firstTouchLine(f.firstTouch)}`);
  f.rounds.forEach((r, i) => {
    const ck = r.imageBytes / r.checkpointSeconds;
    const rs = r.imageBytes / r.restoreSeconds;
    console.log(
      `  round ${i + 1}: checkpoint ${r.checkpointSeconds.toFixed(2)} s (${mbps(ck)}, ${(ck / b.writeBytesPerSecond).toFixed(2)} of disk write, ${(ck / c.writeBytesPerSecond).toFixed(2)} in cold memory, ${(ck / d).toFixed(2)} of direct write; ${(ck / r.beforeWriteBytesPerSecond).toFixed(2)} of the write right before it, ${mbps(r.beforeWriteBytesPerSecond)})` +
        `, restore ${r.restoreSeconds.toFixed(2)} s (${mbps(rs)}, ${(rs / b.readBytesPerSecond).toFixed(2)} of disk read)` +
        `, first execute ${r.firstExecuteSeconds.toFixed(2)} s`,
    );
  });
  if (f.rounds.length > 2) {
    const ratios = f.rounds.map((r) => r.imageBytes / r.checkpointSeconds / b.writeBytesPerSecond);
    const before = f.rounds.map((r) => r.imageBytes / r.checkpointSeconds / r.beforeWriteBytesPerSecond);
    console.log(
      `  ${f.rounds.length} rounds: checkpoint ${spread(f.rounds.map((r) => r.checkpointSeconds))}, of disk write median ${f.checkpointThroughputRatioMedian.toFixed(2)} (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}), ` +
        `of the write right before each median ${f.checkpointThroughputRatioBeforeMedian.toFixed(2)} (${Math.min(...before).toFixed(2)}-${Math.max(...before).toFixed(2)}); ` +
        `first execute ${spread(f.rounds.map((r) => r.firstExecuteSeconds))}`,
    );
  }
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = {};
  if (which.includes('checkpoint')) {
    const figures: CheckpointFigures[] = [];
    for (const size of sizes) {
      const f = await benchCheckpoint(size, log, opts.rounds);
      figures.push(f);
      if (!json) printCheckpoint(f);
    }
    results.checkpoint = figures;
  }
  if (which.includes('control')) {
    log('control: evaluating the shipped policies over synthetic clusters');
    const figures = await benchEvaluation([
      [1_000, 100],
      [10_000, 1_000],
      [50_000, 5_000],
    ]);
    log('control: notice latency and queue throughput against a real Redis and scheduler, with no-op agents');
    const { notice, queue } = await benchQueue(log, { noticeRuns: 20, operations: 500 });
    results.control = { evaluation: figures, notice, queue };
    if (!json) {
      console.log('\ncontrol: evaluation of the shipped policies (nightly: rightsize due as well)');
      for (const f of figures) {
        console.log(`  ${f.pass.padEnd(7)} ${f.sessions} sessions on ${f.nodes} nodes: median ${f.medianMs.toFixed(1)} ms, slowest ${f.maxMs.toFixed(1)} ms, ${f.decisions} decisions`);
      }
      console.log(`\ncontrol: notice on the API to the first agent call (${notice.runs} runs)`);
      console.log(`  median ${notice.medianMs.toFixed(1)} ms, slowest ${notice.maxMs.toFixed(1)} ms; baseline (HTTP + Redis round trip) ${notice.baselineMs.toFixed(2)} ms: ${(notice.medianMs / notice.baselineMs).toFixed(0)}x the baseline`);
      console.log(`\ncontrol: ${queue.operations} checkpoint operations (2 steps each) with no-op agents`);
      console.log(`  ${queue.operationsPerSecond.toFixed(0)} operations/s = ${queue.jobsPerSecond.toFixed(0)} jobs/s; baseline bare BullMQ ${queue.baselineJobsPerSecond.toFixed(0)} jobs/s: ${(queue.jobsPerSecond / queue.baselineJobsPerSecond).toFixed(2)} of the baseline`);
    }
  }
  if (which.includes('migrate')) {
    const figures = await benchMigrate(sizes, log, { rounds: opts.rounds, modes: opts.modes, keepLogs: opts.keepLogs });
    results.migrate = figures;
    if (!json) {
      for (const f of figures) {
        console.log(`\nmigrate (${f.mode}), kernel holding ${f.sizeMiB} MiB (moved ${(f.baselineBytes / 2 ** 20).toFixed(0)} MiB)`);
        console.log(`  baseline: the same bytes disk to disk between the two hosts over the same link, fsynced: ${f.baselineSeconds.toFixed(2)} s`);
        console.log(`  ${firstTouchLine(f.firstTouch)}`);
        const perPage = (f.firstTouch.before.secondsPerPage + f.firstTouch.after.secondsPerPage) / 2;
        for (const r of f.rounds) {
          // The memory sent ahead is what the target's criu fills before the session runs. A baseline, not a part of the
          // move measured: a first touch of as much fresh memory 4 KiB at a time at this run's rate (criu fills the
          // server's in huge pages, and its log times the fill itself).
          const fill = r.bytesAhead ? `; a first touch of as much fresh memory as was sent ahead, 4 KiB pages (baseline), ${((r.bytesAhead / 4096) * perPage).toFixed(2)} s` : '';
          console.log(
            `  ${r.from} -> ${r.to}: downtime (freeze to first execute) ${r.frozenToExecuteSeconds.toFixed(2)} s, ${(r.frozenToExecuteSeconds / f.baselineSeconds).toFixed(2)}x the baseline (${r.dumpToExecuteSeconds.toFixed(2)} s from criu's start); freeze to the server answering ${r.downtimeSeconds.toFixed(2)} s; request to first execute ${r.requestToExecuteSeconds.toFixed(2)} s; move ${r.totalSeconds.toFixed(2)} s, all memory there ${r.memoryCompleteSeconds.toFixed(2)} s, back in huge pages ${r.hugePagesSeconds.toFixed(2)} s; ${((r.bytes - r.bytesAhead) / 2 ** 20).toFixed(0)} MiB sent while frozen${r.bytesAhead ? `, ${(r.bytesAhead / 2 ** 20).toFixed(0)} MiB ahead` : ''}${fill}`,
          );
        }
        if (f.rounds.length > 2) {
          console.log(
            `  ${f.rounds.length} moves: downtime (freeze to first execute) ${spread(f.rounds.map((r) => r.frozenToExecuteSeconds))}, from criu's start ${spread(f.rounds.map((r) => r.dumpToExecuteSeconds))}, freeze to the server answering ${spread(f.rounds.map((r) => r.downtimeSeconds))}, request to first execute ${spread(f.rounds.map((r) => r.requestToExecuteSeconds))}`,
          );
        }
      }
    }
  }
  if (which.includes('wake')) {
    const figures = await benchWake(opts.sizes ?? [256, 1024], log);
    results.wake = figures;
    if (!json) {
      console.log('\nwake: a checkpointed hub session, first request for its notebook page (through the hub proxy and the gateway) to the page loaded');
      for (const f of figures) {
        console.log(
          `  ${f.sizeMiB} MiB: page ${f.wakeToPageSeconds.toFixed(2)} s, first execute on the old kernel ${f.wakeToExecuteSeconds.toFixed(2)} s; baseline cold start of a new server ${f.coldStartSeconds.toFixed(2)} s: ${(f.wakeToPageSeconds / f.coldStartSeconds).toFixed(2)}x the cold start`,
        );
      }
    }
  }
  if (json) process.stdout.write(`${JSON.stringify(results)}\n`);
}

try {
  await main();
} catch (err) {
  // Interrupted: what failed is the bench's own processes going away; the handler is stopping the rest, then exits.
  if (interruptedBy()) await new Promise<never>(() => undefined);
  throw err;
}
