import { describe, expect, it } from 'vitest';
import type { SessionMetrics } from '../../src/agent/metrics.js';
import { SessionRegistry } from '../../src/agent/session-registry.js';
import { SessionReporter } from '../../src/agent/session-reports.js';
import type { Session } from '../../src/core/session.js';
import { useTempDir } from '../helpers/temp-dir.js';

const session = (id: string, state: Session['state']): Session => ({
  id,
  user: 'ada',
  state,
  network: { ip: '10.0.0.2', prefixLength: 24, gateway: '10.0.0.1', mac: '02:00:00:00:00:02', hostVeth: `hs${id}`, port: 8888 },
  token: 'a'.repeat(32),
  pid: 4242,
  home: '/home/ada',
  env: {},
  createdAt: new Date().toISOString(),
  updatedAt: new Date().toISOString(),
  lastCheckpoint: null,
  error: null,
});

const metrics = (s: Session, cpuSeconds: number, at: Date): SessionMetrics => ({
  sessionId: s.id,
  at: at.toISOString(),
  rssBytes: 64 << 20,
  cpuSeconds,
  processes: 2,
  kernels: [],
  connections: 1,
  lastActivity: null,
});

/** What the agent pushes to the scheduler, against a real registry whose sessions change while they are sampled. */
describe("the agent's session reports", () => {
  const dir = useTempDir('hubshift-reports-');

  it('should leave out a session moved away while it was sampled, not report it running here', async () => {
    const registry = new SessionRegistry(dir());
    await registry.put(session('s0000000a', 'running'));
    await registry.put(session('s0000000b', 'running'));
    // As in a move: the source's sample of the server stalls through the freeze, and the move commits meanwhile.
    const reporter = new SessionReporter(registry, async (s) => {
      if (s.id === 's0000000a') await registry.remove(s.id);
      return metrics(s, 1, new Date());
    });
    const r = await reporter.reports();
    expect(r.map((x) => [x.id, x.state])).toEqual([['s0000000b', 'running']]);
  });

  it('should report the state the session has once sampled', async () => {
    const registry = new SessionRegistry(dir());
    await registry.put(session('s0000000c', 'restoring'));
    const reporter = new SessionReporter(registry, async (s) => {
      await registry.update(s.id, { state: 'running', lastCheckpoint: 'c1' });
      return metrics(s, 1, new Date());
    });
    expect((await reporter.reports()).map((x) => [x.id, x.state, x.lastCheckpoint])).toEqual([['s0000000c', 'running', 'c1']]);
  });

  it('should give the CPU rate between two reports', async () => {
    const registry = new SessionRegistry(dir());
    await registry.put(session('s0000000d', 'running'));
    const t0 = Date.now();
    let n = 0;
    const reporter = new SessionReporter(registry, async (s) => (n++ === 0 ? metrics(s, 10, new Date(t0)) : metrics(s, 13, new Date(t0 + 2_000))));
    expect((await reporter.reports())[0]!.cpuCores).toBe(0);
    expect((await reporter.reports())[0]!.cpuCores).toBeCloseTo(1.5);
  });
});
