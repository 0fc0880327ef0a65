import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { NoticeInfo } from '../../src/core/cluster.js';
import type { Decision } from '../../src/core/decision.js';
import { ControlLoop, type LoopPlanner, type LoopState } from '../../src/scheduler/control-loop.js';
import type { Planned } from '../../src/scheduler/planner.js';
import { node, policies, session, snapshot } from './policy-fixtures.js';

const spot = policies([{ kind: 'spot-eviction', safetyMargin: '5s', moveBytesPerSecond: 1e9, moveFixedSeconds: 2, headroom: 1 }]);

/** A cluster of one spot node with two sessions; notices as added; passes held at a gate while it is closed. */
function cluster() {
  const notices: NoticeInfo[] = [];
  let open: () => void = () => undefined;
  let gate: Promise<void> = Promise.resolve();
  const state: LoopState = {
    forgetTakenNodes: async () => [],
    listNotices: async () => [...notices],
    lastRuns: async () => {
      await gate;
      return {};
    },
    setLastRun: async () => undefined,
    snapshot: async () =>
      snapshot({
        nodes: [node('spot-a', { lifecycle: 'spot' }), node('od-b')],
        sessions: [session('s1', 'spot-a'), session('s2', 'spot-a')],
        notices: [...notices],
      }),
  };
  // As the real planner: a session an operation already holds is not planned again.
  const held = new Set<string>();
  const planner: LoopPlanner = {
    plan: async (decisions: Decision[], now: Date): Promise<Planned[]> =>
      decisions
        .filter((d) => d.sessionId !== null && !held.has(d.sessionId))
        .map((d) => {
          held.add(d.sessionId ?? '');
          return { decision: d, op: { id: `op-${d.sessionId}`, kind: d.action, sessionId: d.sessionId, source: d.source, target: d.target, baseCheckpoint: null, decision: d, createdAt: now.toISOString() } };
        }),
  };
  const loop = new ControlLoop(state, planner, { policies: spot, reload: async () => ({ ok: true }) }, pino({ level: 'silent' }), 60_000);
  const notice: NoticeInfo = { id: 'n-1', node: 'spot-a', kind: 'interruption', action: 'terminate', deadline: new Date(Date.now() + 120_000).toISOString(), receivedAt: new Date().toISOString() };
  return {
    loop,
    addNotice: async () => void notices.push(notice),
    close: () => (gate = new Promise((r) => (open = r))),
    open: () => open(),
  };
}

describe('the control loop', () => {
  it("should answer a notice with the moves it led to, when it arrives during another pass", async () => {
    const c = cluster();
    c.close();
    // A timer's pass, held before it reads the state...
    const timerPass = c.loop.kick();
    // ... when the notice arrives: its pass must be the first to see it.
    const noticePass = c.loop.kickAfter(c.addNotice);
    await new Promise((r) => setTimeout(r, 20));
    c.open();
    expect((await timerPass).planned).toEqual([]);
    expect((await noticePass).planned.map((p) => [p.op.kind, p.op.sessionId, p.op.target]).sort()).toEqual([
      ['migrate', 's1', 'od-b'],
      ['migrate', 's2', 'od-b'],
    ]);
  });

  it('should run one pass at a time, and one more for kicks during a pass', async () => {
    const c = cluster();
    c.close();
    const first = c.loop.kick();
    const second = c.loop.kick();
    const third = c.loop.kickAfter(c.addNotice);
    await new Promise((r) => setTimeout(r, 20));
    c.open();
    // The two kicks share the passes under way; the notice's pass comes after them, and plans the moves.
    const [a, b, n] = await Promise.all([first, second, third]);
    expect(a).toBe(b);
    expect(a.planned).toEqual([]);
    expect(n.planned).toHaveLength(2);
    // With nothing under way, a kick runs its own pass.
    expect((await c.loop.kick()).planned).toEqual([]);
  });
});
