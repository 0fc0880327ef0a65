import type { ClusterSnapshot, NodeInfo, SessionSnapshot } from '../core/cluster.js';
import { pricePerGbHour } from '../pricing/session-cost.js';
import { firstReached } from '../util/sorted-search.js';
import { FreeMemoryIndex } from './free-memory-index.js';
import type { Guards, PolicyKind } from './policy-schema.js';
import { inQuietHours } from './quiet-hours.js';

export type Refusal = { ok: false; why: string };

/**
 * One evaluation pass: what is already decided or in flight, what budget is
 * left (computed once, decremented as methods decide), and memory reserved
 * on targets so two moves in one pass do not fill the same room twice.
 */
export class EvaluationContext {
  readonly nodes = new Map<string, NodeInfo>();
  readonly sessionsByNode = new Map<string, SessionSnapshot[]>();
  /** Nodes with an interruption or rebalance notice: nothing moves onto them. */
  readonly noticed = new Set<string>();
  /** Nodes whose interruption deadline has passed: the cloud has them, nothing is placed there (consolidation may still release them). */
  readonly gone = new Set<string>();
  /** Nodes this pass empties (empty()): nothing moves onto them either. */
  private readonly emptyingNodes = new Set<string>();
  private readonly decided = new Set<string>();
  private readonly inFlight = new Set<string>();
  /** Memory held per node: its sessions plus what this pass moves in. */
  private readonly used = new Map<string, number>();
  /** Ready nodes by price per GB-hour, cheapest first: placement takes the first with room. */
  private readonly byPrice: NodeInfo[];
  /** byPrice's prices per GB-hour, in its order (ascending). */
  private readonly prices: Float64Array;
  /** byPrice's positions by node name. */
  private readonly priceRank = new Map<string, number>();
  /** byPrice's free memory, -Infinity where nothing may be placed (a notice, emptying). */
  private readonly free: FreeMemoryIndex;
  private readonly quietKinds = new Map<PolicyKind, boolean>();
  private readonly perNodeLeft = new Map<string, number>();
  private totalLeft: number;

  constructor(
    readonly snapshot: ClusterSnapshot,
    readonly guards: Guards,
    readonly now: Date,
  ) {
    for (const n of snapshot.nodes) this.nodes.set(n.name, n);
    for (const s of snapshot.sessions) {
      if (s.node === null) continue;
      const list = this.sessionsByNode.get(s.node);
      if (list) list.push(s);
      else this.sessionsByNode.set(s.node, [s]);
      this.used.set(s.node, (this.used.get(s.node) ?? 0) + s.rssBytes);
    }
    this.byPrice = snapshot.nodes.filter((n) => n.state === 'ready').sort((a, b) => pricePerGbHour(a) - pricePerGbHour(b) || a.name.localeCompare(b.name));
    this.prices = Float64Array.from(this.byPrice, pricePerGbHour);
    for (const n of snapshot.notices) {
      const gone = n.deadline !== null && Date.parse(n.deadline) <= now.getTime();
      if (gone) this.gone.add(n.node);
      else this.noticed.add(n.node);
    }
    this.free = new FreeMemoryIndex(this.byPrice.length);
    this.byPrice.forEach((n, i) => {
      // Names are unique in a snapshot (the scheduler keys nodes by name); were one not, its first node would take placements.
      if (this.priceRank.has(n.name)) return;
      this.priceRank.set(n.name, i);
      if (this.placeable(n.name)) this.free.set(i, n.memoryBytes - this.usedBytes(n.name));
    });
    this.totalLeft = guards.budgets.total;
    for (const op of snapshot.inFlight) {
      if (op.sessionId) this.inFlight.add(op.sessionId);
      this.totalLeft -= 1;
      if (op.node) this.perNodeLeft.set(op.node, this.budgetLeft(op.node) - 1);
    }
  }

  private budgetLeft(node: string): number {
    return this.perNodeLeft.get(node) ?? this.guards.budgets.perNode;
  }

  /** Whether a voluntary policy may act on this session now, and if not, why. */
  mayDisrupt(s: SessionSnapshot, kind: PolicyKind, operations = 1): { ok: true } | Refusal {
    if (this.decided.has(s.id) || this.inFlight.has(s.id)) return { ok: false, why: 'already being acted on' };
    // Its agent would not answer: every pass would plan an operation that fails (a notice's evictions still try).
    if (s.node !== null && this.nodes.get(s.node)?.state === 'silent') return { ok: false, why: `its node ${s.node} is silent (its agent not heard from lately)` };
    if (s.busy) return { ok: false, why: 'a kernel is busy' };
    if (s.lastDisruptionAt !== null && this.now.getTime() - Date.parse(s.lastDisruptionAt) < this.guards.cooldown) {
      return { ok: false, why: 'in cooldown' };
    }
    if (this.quiet(kind)) return { ok: false, why: 'quiet hours' };
    return this.hasBudget(s.node, operations);
  }

  hasBudget(node: string | null, operations = 1): { ok: true } | Refusal {
    if (this.totalLeft < operations) return { ok: false, why: 'overall disruption budget exhausted' };
    if (node !== null && this.budgetLeft(node) < operations) return { ok: false, why: `disruption budget of node ${node} exhausted` };
    return { ok: true };
  }

  /** Whether quiet hours hold this kind back now (worked out once per pass). */
  quiet(kind: PolicyKind): boolean {
    let q = this.quietKinds.get(kind);
    if (q === undefined) {
      q = (this.guards.quietHoursApplyTo as string[]).includes(kind) && inQuietHours(this.guards.quietHours, this.now);
      this.quietKinds.set(kind, q);
    }
    return q;
  }

  isSettled(sessionId: string): boolean {
    return this.decided.has(sessionId) || this.inFlight.has(sessionId);
  }

  /** Records a decision on a session: it takes budget (unless forced) and the session is not decided on again. */
  claim(s: SessionSnapshot, opts: { forced: boolean }): void {
    this.decided.add(s.id);
    if (opts.forced) return;
    this.totalLeft -= 1;
    if (s.node !== null) this.perNodeLeft.set(s.node, this.budgetLeft(s.node) - 1);
  }

  /** Memory held on a node: its sessions (those leaving this pass included, until they are gone) plus what moves in. */
  usedBytes(node: string): number {
    return this.used.get(node) ?? 0;
  }

  /** Gives back room reserved by place() for a plan that was dropped. */
  unreserve(node: string, bytes: number): void {
    this.addUsed(node, -bytes);
  }

  /** Nodes this pass empties: nothing moves onto them. */
  get emptying(): ReadonlySet<string> {
    return this.emptyingNodes;
  }

  /** Marks a node as emptied by this pass: nothing is placed on it from now on. */
  empty(node: string): void {
    this.emptyingNodes.add(node);
    const i = this.priceRank.get(node);
    if (i !== undefined) this.free.set(i, -Infinity);
  }

  private placeable(node: string): boolean {
    return !this.noticed.has(node) && !this.gone.has(node) && !this.emptyingNodes.has(node);
  }

  private addUsed(node: string, bytes: number): void {
    const used = this.usedBytes(node) + bytes;
    this.used.set(node, used);
    const i = this.priceRank.get(node);
    if (i !== undefined && this.placeable(node)) this.free.set(i, (this.byPrice[i] as NodeInfo).memoryBytes - used);
  }

  /**
   * The cheapest node (per GB-hour) that is ready, has no notice (nor one whose
   * deadline has passed), is not being emptied, and has room for `bytes` times `headroom`; reserves the room.
   */
  place(
    bytes: number,
    headroom: number,
    exclude: ReadonlySet<string>,
    filter: (n: NodeInfo) => boolean = () => true,
    /** Only nodes cheaper than this per GB-hour. */
    belowPricePerGbHour = Infinity,
  ): NodeInfo | null {
    const need = bytes * headroom;
    const end = firstReached(this.prices.length, (i) => (this.prices[i] as number) >= belowPricePerGbHour);
    for (let i = this.free.firstAtLeast(need, 0, end); i >= 0; i = this.free.firstAtLeast(need, i + 1, end)) {
      const n = this.byPrice[i] as NodeInfo;
      if (exclude.has(n.name) || !filter(n)) continue;
      this.addUsed(n.name, bytes);
      return n;
    }
    return null;
  }
}
