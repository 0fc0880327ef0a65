import type { SessionSnapshot } from '../../core/cluster.js';
import type { Decision } from '../../core/decision.js';
import { pricePerGbHour, sessionShareCostPerHour } from '../../pricing/session-cost.js';
import { gib, migrateDecision, span, usd } from '../describe.js';
import type { EvaluationContext } from '../evaluation-context.js';
import { percentileSorting } from '../percentile.js';
import type { Policy } from '../policy-schema.js';
import { scheduleFired } from '../schedule.js';

type Rightsize = Extract<Policy, { kind: 'rightsize' }>;

const MIN_SAMPLES = 3;

interface Need {
  s: SessionSnapshot;
  memory: number;
  cpu: number;
}

/**
 * On its schedule: each session's usage over the window (a percentile of its
 * samples, times headroom) is what it needs. A node whose sessions need more
 * than it has sheds its largest sessions to nodes where they fit; a session
 * on a node dearer per GB-hour than one where it fits moves there when the
 * saving is worth a disruption.
 */
export function rightsize(ctx: EvaluationContext, p: Rightsize): Decision[] {
  if (!scheduleFired(p.schedule, p.timezone, ctx.snapshot.lastRuns[p.name], ctx.now)) return [];
  const out: Decision[] = [];
  const since = ctx.now.getTime() - p.window;
  const sinceIso = new Date(since).toISOString();
  // UTC timestamps of one form compare as strings; anything else is parsed.
  const inWindow = (at: string): boolean => (at.length === sinceIso.length && at.endsWith('Z') ? at >= sinceIso : Date.parse(at) >= since);
  const needs = new Map<string, Need[]>();
  // Scratch for every session's samples, grown as needed: a typed array of more than eight samples each was an
  // allocation outside the heap per session (rightsize of 10k sessions 19 ms that way, 15.5 ms with the scratch).
  let memory = new Float64Array(16);
  let cpu = new Float64Array(16);
  for (const s of ctx.snapshot.sessions) {
    // Sessions an earlier method already claimed are leaving their node: they neither need room nor count in its pressure.
    if (s.state !== 'running' || s.node === null || !ctx.nodes.has(s.node) || ctx.isSettled(s.id)) continue;
    if (s.samples.length > memory.length) {
      memory = new Float64Array(s.samples.length);
      cpu = new Float64Array(s.samples.length);
    }
    let inside = 0;
    for (const x of s.samples) {
      if (!inWindow(x.at)) continue;
      memory[inside] = x.rssBytes;
      cpu[inside++] = x.cpuCores;
    }
    if (inside < MIN_SAMPLES) continue;
    const n: Need = {
      s,
      memory: percentileSorting(memory.subarray(0, inside), p.percentile) * p.headroom,
      cpu: percentileSorting(cpu.subarray(0, inside), p.percentile) * p.headroom,
    };
    const list = needs.get(s.node);
    if (list) list.push(n);
    else needs.set(s.node, [n]);
  }
  const describeNeed = (n: Need): string => `p${p.percentile} over ${span(p.window)}: ${gib(n.memory / p.headroom)}, ${(n.cpu / p.headroom).toFixed(2)} cores`;
  for (const [nodeName, list] of needs) {
    const node = ctx.nodes.get(nodeName);
    if (!node) continue;
    let pressure = list.reduce((a, n) => a + n.memory, 0) - node.memoryBytes;
    // Largest first: fewest moves to relieve pressure.
    for (const n of [...list].sort((a, b) => b.memory - a.memory || a.s.id.localeCompare(b.s.id))) {
      if (!ctx.mayDisrupt(n.s, 'rightsize').ok) continue;
      const fits = (t: { cpus: number }): boolean => t.cpus >= n.cpu;
      if (pressure > 0) {
        const target = ctx.place(n.memory, 1, new Set([nodeName]), fits);
        if (!target) continue;
        pressure -= n.memory;
        ctx.claim(n.s, { forced: false });
        out.push(migrateDecision({ policy: p.name, s: n.s, source: node, target, reason: `${nodeName} is short of memory for what its sessions use (${describeNeed(n)} for this one): moving it to ${target.name}` }));
        continue;
      }
      const target = ctx.place(n.memory, 1, new Set([nodeName]), fits, pricePerGbHour(node));
      if (!target) continue;
      const saving = sessionShareCostPerHour(node, n.memory) - sessionShareCostPerHour(target, n.memory);
      if (saving < p.minSavingPerHour) {
        ctx.unreserve(target.name, n.memory);
        continue;
      }
      ctx.claim(n.s, { forced: false });
      out.push(migrateDecision({ policy: p.name, s: n.s, source: node, target, reason: `${describeNeed(n)}; fits ${target.name} at $${pricePerGbHour(target).toFixed(4)}/GB-h instead of ${nodeName} at $${pricePerGbHour(node).toFixed(4)}/GB-h, saving ${usd(saving)}` }));
    }
  }
  return out;
}
