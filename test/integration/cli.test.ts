import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHubshift as hubshift } from '../helpers/control-plane.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

describe('the hubshift command against a real agent', () => {
  let t: TestAgent;
  let conn: string[];
  beforeAll(async () => {
    t = await startTestAgent();
    const tokenFile = join(t.config.dataDir, 'token');
    await writeFile(tokenFile, `${t.token}\n`);
    conn = ['--agent', t.agent.url, '--token-file', tokenFile, '--json'];
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it('should print the documented JSON for start, checkpoint and restore', async () => {
    const start = await hubshift(['session', 'start', '--user', 'dora', ...conn]);
    expect(start.code).toBe(0);
    const s = JSON.parse(start.stdout) as Record<string, unknown>;
    expect(Object.keys(s).sort()).toEqual(['id', 'token', 'url']);
    expect(s.url).toMatch(/^http:\/\/10\.220\.\d+\.\d+:8888\/$/);

    const ck = await hubshift(['checkpoint', String(s.id), ...conn]);
    expect(ck.code).toBe(0);
    const c = JSON.parse(ck.stdout) as Record<string, unknown>;
    expect(Object.keys(c).sort()).toEqual(['bytes', 'checkpoint', 'seconds']);

    const ls = JSON.parse((await hubshift(['session', 'ls', ...conn])).stdout) as { sessions: Array<{ id: string; state: string }> };
    expect(ls.sessions).toEqual([expect.objectContaining({ id: s.id, state: 'checkpointed' })]);

    const rs = await hubshift(['restore', String(c.checkpoint), ...conn]);
    expect(rs.code).toBe(0);
    const r = JSON.parse(rs.stdout) as Record<string, unknown>;
    expect(Object.keys(r).sort()).toEqual(['id', 'seconds', 'token', 'url']);
    expect({ id: r.id, url: r.url, token: r.token }).toEqual(s);

    const again = await hubshift(['restore', String(c.checkpoint), ...conn]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already running on this agent.*\[conflict\]/);

    expect((await hubshift(['session', 'rm', String(s.id), ...conn])).code).toBe(0);
  });

  it('should say what is wrong with a bad token file or an unreachable agent', async () => {
    const noFile = await hubshift(['session', 'ls', '--agent', t.agent.url, '--token-file', '/nonexistent/token']);
    expect(noFile.code).toBe(2);
    expect(noFile.stderr).toContain('cannot read token file /nonexistent/token');
    const wrong = join(t.config.dataDir, 'wrong-token');
    await writeFile(wrong, 'x'.repeat(40));
    const denied = await hubshift(['session', 'ls', '--agent', t.agent.url, '--token-file', wrong]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/token.*\[unauthorized\]/);
    const away = await hubshift(['session', 'ls', '--agent', 'http://127.0.0.1:1', '--token-file', wrong]);
    expect(away.stderr).toContain('is hubshift agent running there?');
  });

  it('should print the dry-run plan of the shipped policies for a recorded snapshot', async () => {
    const snap = join(import.meta.dirname, '../fixtures/snapshot-spot.json');
    const policiesDir = join(import.meta.dirname, '../../policies');
    const r = await hubshift(['plan', '--snapshot', snap, '--policies', policiesDir, '--at', '2026-11-23T21:00:00Z', '--json']);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { decisions: Array<{ action: string; sessionId: string; target: string | null; policy: string }> };
    expect(plan.decisions.map((d) => [d.action, d.sessionId, d.target, d.policy])).toEqual([
      ['migrate', 's00000001', 'od-b', 'spot-eviction'],
      ['checkpoint', 's00000002', null, 'idle'],
    ]);
    const bad = await hubshift(['plan', '--snapshot', join(import.meta.dirname, '../../package.json'), '--policies', policiesDir]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/snapshot .*package\.json is invalid at nodes/);
  });

  it('should document every command in --help', async () => {
    for (const cmd of [[], ['agent'], ['session', 'start'], ['checkpoint'], ['restore'], ['criu', 'select'], ['plan']]) {
      const h = await hubshift([...cmd, '--help']);
      expect(h.code).toBe(0);
      expect(h.stdout).toMatch(/Usage: hubshift/);
    }
  });
});
