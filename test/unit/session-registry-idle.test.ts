import { describe, expect, it } from 'vitest';
import { AgentStoppingError } from '../../src/core/index.js';
import { SessionRegistry } from '../../src/agent/session-registry.js';

describe('SessionRegistry.idle and stopping', () => {
  const registry = (): SessionRegistry => new SessionRegistry('/nonexistent-never-written');

  it('should resolve at once when no operation is under way', async () => {
    expect(await registry().idle(10)).toBe(true);
  });

  it('should resolve once the last operation under way has ended, and false when one outlasts the wait', async () => {
    const r = registry();
    let end: () => void = () => undefined;
    const op = r.exclusive('s1', 'restore', () => new Promise<void>((resolve) => (end = resolve)));
    expect(r.underWay).toBe(1);
    expect(await r.idle(30)).toBe(false);
    const waiting = r.idle(5_000);
    end();
    await op;
    expect(await waiting).toBe(true);
    expect(r.underWay).toBe(0);
  });

  it('should start no operation once the agent is stopping, and let one under way end', async () => {
    const stopping = new AbortController();
    const r = new SessionRegistry('/nonexistent-never-written', stopping.signal);
    let end: () => void = () => undefined;
    const op = r.exclusive('s1', 'checkpoint', () => new Promise<string>((resolve) => (end = () => resolve('checkpointed'))));
    stopping.abort();
    let ran = false;
    const refused = await r.exclusive('s2', 'checkpoint', async () => (ran = true)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(AgentStoppingError);
    expect(refused).toMatchObject({ status: 503, code: 'agent_stopping', message: expect.stringMatching(/this agent is stopping and begins nothing new: the checkpoint of session s2 was refused/) });
    expect(ran).toBe(false);
    // Except the start of a moved-in copy that is already the session's only one.
    expect(await r.exclusive('s3', 'start moved in', async () => 'started', { finishesHandOver: true })).toBe('started');
    expect(r.underWay).toBe(1);
    end();
    expect(await op).toBe('checkpointed');
    expect(await r.idle(10)).toBe(true);
  });

  it('should describe the operations under way, with their step and progress', async () => {
    const r = registry();
    let end: () => void = () => undefined;
    const op = r.exclusive('s1', 'checkpoint', () => new Promise<void>((resolve) => (end = resolve)));
    expect(r.describeUnderWay()).toEqual([expect.stringMatching(/^checkpoint of s1 \(starting, since \d{4}-\d\d-\d\dT/)]);
    r.report('s1', 'dumping', 12 * 2 ** 20, 64 * 2 ** 20);
    expect(r.describeUnderWay()).toEqual([expect.stringMatching(/^checkpoint of s1 \(dumping, 12 of 64 MiB, since /)]);
    end();
    await op;
    expect(r.describeUnderWay()).toEqual([]);
  });
});
