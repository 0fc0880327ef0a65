import { describe, expect, it } from 'vitest';
import { SessionRegistry } from '../../src/agent/session-registry.js';

describe('SessionRegistry.idle', () => {
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
});
