import { execFile } from 'node:child_process';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimulationReport, Trace } from '../../src/core/trace.js';
import { loadPolicyDir } from '../../src/policy/load-policies.js';
import type { PolicySet } from '../../src/policy/policy-schema.js';
import { loadPriceTable } from '../../src/pricing/price-table.js';
import { simulationCatalog } from '../../src/simulator/sim-catalog.js';
import { Simulation, onLanes } from '../../src/simulator/simulate.js';
import { DEFAULT_TIMINGS } from '../../src/simulator/timings.js';
import { generateTrace, traceLines } from '../../src/simulator/trace-generator.js';
import { parseTrace, readTraceFile } from '../../src/simulator/trace-reader.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const START = new Date('2026-11-02T00:00:00Z');

const text = (o: Parameters<typeof generateTrace>[0]): string => [...traceLines(generateTrace(o))].join('\n');

let policies: PolicySet;
let catalog: ReturnType<typeof simulationCatalog>;

beforeAll(async () => {
  policies = await loadPolicyDir(join(ROOT, 'policies'));
  catalog = simulationCatalog(await loadPriceTable(), 0.35);
});

function simulate(trace: Trace, o: { seed?: number; spotReclaimPerMonth?: number; set?: PolicySet } = {}): SimulationReport {
  return new Simulation({
    policies: o.set ?? policies,
    catalog,
    timings: DEFAULT_TIMINGS,
    seed: o.seed ?? 1,
    spotReclaimPerMonth: o.spotReclaimPerMonth ?? 0.25,
    spotPriceFactor: 0.35,
    cullAfterMs: 3600_000,
  }).run(trace);
}

describe('trace generator', () => {
  it('should write the same trace for the same options and another for another seed', () => {
    const a = text({ users: 40, days: 7, seed: 5, start: START });
    expect(text({ users: 40, days: 7, seed: 5, start: START })).toBe(a);
    expect(text({ users: 40, days: 7, seed: 6, start: START })).not.toBe(a);
    // What it writes, it reads back.
    const t = parseTrace(a);
    expect(t.header.users).toBe(40);
    expect(t.events.length).toBeGreaterThan(100);
  });

  it('should follow the published shape: about a fifth of users active on a weekday, memory around 0.7 GB', () => {
    const t = parseTrace(text({ users: 300, days: 14, seed: 2, start: START }));
    const weekdays = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11];
    const activePerDay = weekdays.map((d) => {
      const from = START.getTime() + d * 86_400_000;
      return new Set(t.events.filter((e) => e.type === 'usage' && e.active && e.atMs >= from && e.atMs < from + 86_400_000).map((e) => e.user)).size / 300;
    });
    const mean = activePerDay.reduce((a, b) => a + b, 0) / activePerDay.length;
    expect(mean).toBeGreaterThan(0.15);
    expect(mean).toBeLessThan(0.25);
    const peaks = new Map<string, number>();
    for (const e of t.events) if (e.type === 'usage') peaks.set(e.user, Math.max(peaks.get(e.user) ?? 0, e.rssBytes));
    const sorted = [...peaks.values()].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    expect(median).toBeGreaterThan(0.5e9);
    expect(median).toBeLessThan(2e9);
  });

  it('should keep the shipped sample trace reproducible from its command', async () => {
    const shipped = await readFile(join(ROOT, 'traces/sample-month-300-users.jsonl'), 'utf8');
    expect(shipped).toBe(`${text({ users: 300, days: 30, seed: 1, start: new Date('2026-11-01T00:00:00Z') })}\n`);
  });
});

describe('simulator', () => {
  const week = parseTrace(text({ users: 60, days: 7, seed: 11, start: START }));

  it('should give the same report for the same trace and seed', () => {
    const a = simulate(week, { seed: 4 });
    expect(simulate(week, { seed: 4 })).toEqual(a);
    expect(a.cost).toBeGreaterThan(0);
    expect(a.baselines.alwaysOnOnDemand).toBeGreaterThan(a.cost);
    expect(a.ratio).toBeCloseTo(a.baselines.alwaysOnOnDemand / a.cost, 1);
  });

  it('should save nothing from the idle policy when nobody is ever idle', () => {
    const busy = parseTrace(text({ users: 60, days: 7, seed: 11, start: START, alwaysActive: true }));
    const r = simulate(busy, { spotReclaimPerMonth: 0 });
    expect(r.savingsByPolicy.idle ?? 0).toBe(0);
    expect(r.delays.wakes.count).toBe(0);
    // The same people on the idle-prone trace: idle checkpoints save money.
    const idle = simulate(week, { spotReclaimPerMonth: 0 });
    expect(idle.savingsByPolicy.idle).toBeGreaterThan(0);
  });

  it('should see no interruption at a spot rate of zero, and every spot node interrupted at one, losing nothing', () => {
    const none = simulate(week, { spotReclaimPerMonth: 0 });
    expect(none.spot.poolInterruptions).toBe(0);
    expect(none.spot.evacuated).toEqual({ moved: 0, checkpointed: 0, lost: 0 });
    expect(none.costBreakdown.spotNodeHours).toBeGreaterThan(0);
    expect(none.lostSessions).toBe(0);

    const all = simulate(week, { spotReclaimPerMonth: 1 });
    expect(all.spot.spotNodesLaunched).toBeGreaterThan(0);
    expect(all.spot.nodesInterrupted).toBe(all.spot.spotNodesLaunched);
    expect(all.lostSessions).toBe(0);
    // Spot that never lasts: the platform runs on on-demand and pays more.
    expect(all.costBreakdown.onDemandNodeHours).toBeGreaterThan(all.costBreakdown.spotNodeHours);
    expect(all.cost).toBeGreaterThan(none.cost);
  });

  it("should run operations off a node on as many lanes as it registers, and a move reached after its latest start as a checkpoint", () => {
    // Two lanes, one busy until 10 s: the next operation starts now on the other; with both busy, when the first frees.
    expect(onLanes([10_000, 0], 5_000)).toEqual({ lane: 1, begin: 5_000, late: false });
    expect(onLanes([10_000, 12_000], 5_000, 11_000)).toEqual({ lane: 0, begin: 10_000, late: false });
    expect(onLanes([10_000, 12_000], 5_000, 9_000)).toEqual({ lane: 0, begin: 10_000, late: true });
    // One lane: one after another, as before the lanes.
    expect(onLanes([7_000], 5_000)).toEqual({ lane: 0, begin: 7_000, late: false });
  });

  it('should meet the target on the sample month: at most a tenth of always-on on-demand, no session lost', async () => {
    const r = simulate(await readTraceFile(join(ROOT, 'traces/sample-month-300-users.jsonl')));
    expect(r.lostSessions).toBe(0);
    expect(r.ratio).toBeGreaterThanOrEqual(10);
  }, 120_000);
});

describe('malformed traces', () => {
  const header = JSON.stringify({ type: 'header', version: 1, start: '2026-11-02T00:00:00Z', end: '2026-11-03T00:00:00Z', users: 1 });
  const start = JSON.stringify({ type: 'start', at: '2026-11-02T09:00:00Z', user: 'ann' });
  const use = (o: Record<string, unknown> = {}): string => JSON.stringify({ type: 'usage', at: '2026-11-02T09:01:00Z', user: 'ann', rssBytes: 1e9, cpuCores: 0.1, busy: 0.02, active: true, connections: 1, ...o });

  it.each([
    ['not JSON', [header, start, '{"type":"usage",'], /trace line 3: not JSON/],
    ['a field missing', [header, start, JSON.stringify({ type: 'usage', at: '2026-11-02T09:01:00Z', user: 'ann', cpuCores: 0, busy: 0, active: true, connections: 0 })], /trace line 3: rssBytes:/],
    ['a field out of range', [header, start, use({ busy: 1.5 })], /trace line 3: busy:/],
    ['an unknown event type', [header, JSON.stringify({ type: 'pause', at: '2026-11-02T09:00:00Z', user: 'ann' })], /trace line 2: type:/],
    ['a bad time', [header, JSON.stringify({ type: 'start', at: 'yesterday', user: 'ann' })], /trace line 2: at:/],
    ['events out of order', [header, start, use(), use({ at: '2026-11-02T08:00:00Z' })], /trace line 4: at: .*time order/],
    ['an event outside the span', [header, JSON.stringify({ type: 'start', at: '2026-11-05T09:00:00Z', user: 'ann' })], /trace line 2: at: .*outside/],
    ['usage before the server starts', [header, use()], /trace line 2: user: ann has no server running/],
    ['a second start', [header, start, start], /trace line 3: user: ann's server is already running/],
    ['no header', [start], /trace line 1: type:/],
  ])('should refuse %s, naming the line and field', (_what, lines, message) => {
    expect(() => parseTrace(lines.join('\n'))).toThrow(message);
  });

  it('should refuse an empty trace', () => {
    expect(() => parseTrace('')).toThrow(/trace is empty/);
  });

  describe('through the command line', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'hubshift-sim-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('should exit 2 with the line and field, and print a JSON report for a good trace', async () => {
      const bad = join(dir, 'bad.jsonl');
      await writeFile(bad, [header, start, use({ rssBytes: -5 })].join('\n'));
      const cli = [join(ROOT, 'bin/hubshift.js'), 'simulate', '--policies', join(ROOT, 'policies')];
      const err = await exec(process.execPath, [...cli, '--trace', bad]).then(
        () => null,
        (e: { code: number; stderr: string }) => e,
      );
      expect(err?.code).toBe(2);
      expect(err?.stderr).toMatch(/trace line 3: rssBytes:/);

      const good = join(dir, 'good.jsonl');
      await writeFile(good, [header, start, use(), JSON.stringify({ type: 'stop', at: '2026-11-02T12:00:00Z', user: 'ann' })].join('\n'));
      const { stdout } = await exec(process.execPath, [...cli, '--trace', good, '--json', '--spot-reclaim', '0']);
      const r = JSON.parse(stdout) as SimulationReport;
      expect(Object.keys(r)).toEqual(expect.arrayContaining(['cost', 'baselines', 'ratio', 'lostSessions']));
      expect(r.baselines.alwaysOnOnDemand).toBeGreaterThan(0);
      expect(r.lostSessions).toBe(0);
    }, 60_000);
  });
});
