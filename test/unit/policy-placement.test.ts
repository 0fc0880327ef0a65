import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../../src/core/cluster.js';
import { EvaluationContext } from '../../src/policy/evaluation-context.js';
import { FreeMemoryIndex } from '../../src/policy/free-memory-index.js';
import { DEFAULT_GUARDS } from '../../src/policy/policy-schema.js';
import { pricePerGbHour } from '../../src/pricing/session-cost.js';
import { rng } from '../bench/synthetic-cluster.js';
import { GiB, NOW, later, node, session, snapshot } from './policy-fixtures.js';

describe('FreeMemoryIndex', () => {
  it('should find the first position from a start with at least the bytes asked, as a scan does', () => {
    const r = rng(7);
    for (const length of [1, 2, 3, 5, 8, 13, 64, 100]) {
      const index = new FreeMemoryIndex(length);
      const values = Array.from({ length }, () => -Infinity);
      for (let step = 0; step < 400; step++) {
        const i = Math.floor(r() * length);
        values[i] = r() < 0.1 ? -Infinity : Math.floor(r() * 100);
        index.set(i, values[i] as number);
        const need = Math.floor(r() * 110);
        const from = Math.floor(r() * (length + 1));
        const to = from + Math.floor(r() * (length + 1 - from));
        const scan = values.findIndex((v, at) => at >= from && at < to && v >= need);
        expect(index.firstAtLeast(need, from, to), `length ${length}, step ${step}`).toBe(scan);
        expect(index.get(i)).toBe(values[i]);
      }
    }
  });

  it('should find nothing in an empty range, and refuse a position it does not have', () => {
    const index = new FreeMemoryIndex(4);
    index.set(2, 10);
    expect(index.firstAtLeast(5)).toBe(2);
    expect(index.firstAtLeast(5, 3)).toBe(-1);
    expect(index.firstAtLeast(5, 0, 2)).toBe(-1);
    expect(index.firstAtLeast(11)).toBe(-1);
    expect(new FreeMemoryIndex(0).firstAtLeast(0)).toBe(-1);
    expect(() => index.set(4, 1)).toThrow(RangeError);
  });
});

/** Placement as it was before the index: every ready node in price order, the first with room. */
class ScanPlacement {
  private readonly used = new Map<string, number>();
  private readonly byPrice: NodeInfo[];
  readonly emptying = new Set<string>();
  constructor(
    nodes: NodeInfo[],
    sessions: Array<{ node: string | null; rssBytes: number }>,
    private readonly blocked: ReadonlySet<string>,
  ) {
    for (const s of sessions) if (s.node !== null) this.used.set(s.node, (this.used.get(s.node) ?? 0) + s.rssBytes);
    this.byPrice = nodes.filter((n) => n.state === 'ready').sort((a, b) => pricePerGbHour(a) - pricePerGbHour(b) || a.name.localeCompare(b.name));
  }
  usedBytes(n: string): number {
    return this.used.get(n) ?? 0;
  }
  unreserve(n: string, bytes: number): void {
    this.used.set(n, this.usedBytes(n) - bytes);
  }
  place(bytes: number, headroom: number, exclude: ReadonlySet<string>, filter: (n: NodeInfo) => boolean, below: number): NodeInfo | null {
    for (const n of this.byPrice) {
      if (pricePerGbHour(n) >= below) break;
      if (this.blocked.has(n.name) || this.emptying.has(n.name) || exclude.has(n.name)) continue;
      if (n.memoryBytes - this.usedBytes(n.name) < bytes * headroom || !filter(n)) continue;
      this.used.set(n.name, this.usedBytes(n.name) + bytes);
      return n;
    }
    return null;
  }
}

describe('placement in an evaluation pass', () => {
  it('should place, give back and empty exactly as a scan of the nodes in price order would, on random clusters', () => {
    const types = [
      { instanceType: 'm5.xlarge', memoryBytes: 16 * GiB, cpus: 4, pricePerHour: 0.192 },
      { instanceType: 'r5.xlarge', memoryBytes: 32 * GiB, cpus: 4, pricePerHour: 0.252 },
      { instanceType: 'r5.2xlarge', memoryBytes: 64 * GiB, cpus: 8, pricePerHour: 0.504 },
    ];
    for (let seed = 1; seed <= 30; seed++) {
      const r = rng(seed);
      const nodes = Array.from({ length: 1 + Math.floor(r() * 40) }, (_, i) => {
        const t = types[Math.floor(r() * types.length)] as (typeof types)[number];
        const spot = r() < 0.4;
        const state = r() < 0.1 ? 'silent' : r() < 0.05 ? 'cordoned' : 'ready';
        return node(`n${i}`, { ...t, lifecycle: spot ? 'spot' : 'on-demand', pricePerHour: spot ? t.pricePerHour * 0.35 : t.pricePerHour, state: state as NodeInfo['state'] });
      });
      const sessions = Array.from({ length: Math.floor(r() * 200) }, (_, i) => session(`s${i}`, r() < 0.05 ? null : `n${Math.floor(r() * nodes.length)}`, { rssBytes: Math.floor(r() * 8 * GiB) }));
      const noticed = nodes.filter(() => r() < 0.1).map((n) => n.name);
      const notices = noticed.map((name, i) => ({ id: `x${i}`, node: name, kind: 'interruption' as const, action: 'terminate' as const, deadline: later(r() < 0.5 ? 120_000 : -1_000), receivedAt: NOW.toISOString() }));
      const ctx = new EvaluationContext(snapshot({ nodes, sessions, notices }), DEFAULT_GUARDS, NOW);
      const scan = new ScanPlacement(nodes, sessions, new Set(noticed));
      const placed: Array<{ node: string; bytes: number }> = [];
      for (let step = 0; step < 300; step++) {
        const what = r();
        if (what < 0.1 && placed.length > 0) {
          const [p] = placed.splice(Math.floor(r() * placed.length), 1);
          ctx.unreserve(p!.node, p!.bytes);
          scan.unreserve(p!.node, p!.bytes);
        } else if (what < 0.15) {
          const name = `n${Math.floor(r() * nodes.length)}`;
          ctx.empty(name);
          scan.emptying.add(name);
        } else {
          const bytes = Math.floor(r() * 12 * GiB);
          const headroom = r() < 0.5 ? 1 : 1 + r();
          const exclude = new Set([`n${Math.floor(r() * nodes.length)}`]);
          const cpus = r() < 0.2 ? 6 : 0;
          const filter = (n: NodeInfo): boolean => n.cpus >= cpus;
          const below = r() < 0.5 ? Infinity : pricePerGbHour(nodes[Math.floor(r() * nodes.length)] as NodeInfo);
          const got = ctx.place(bytes, headroom, exclude, filter, below);
          const want = scan.place(bytes, headroom, exclude, filter, below);
          expect(got?.name ?? null, `seed ${seed}, step ${step}`).toBe(want?.name ?? null);
          if (got) placed.push({ node: got.name, bytes });
        }
      }
      for (const n of nodes) expect(ctx.usedBytes(n.name), `seed ${seed}, ${n.name}`).toBe(scan.usedBytes(n.name));
      expect([...ctx.emptying].sort()).toEqual([...scan.emptying].sort());
    }
  });
});
