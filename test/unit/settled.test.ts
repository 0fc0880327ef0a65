import { describe, expect, it } from 'vitest';
import { allSettledOrThrow } from '../../src/util/settled.js';

describe('allSettledOrThrow', () => {
  it('should give every value in order', async () => {
    const [a, b, c] = await allSettledOrThrow([Promise.resolve(1), 'two', undefined]);
    expect([a, b, c]).toEqual([1, 'two', undefined]);
  });

  it('should throw the first failure only once every promise has settled', async () => {
    let slowDone = false;
    const slow = new Promise<void>((resolve) => setTimeout(() => resolve(void (slowDone = true)), 50));
    const err = await allSettledOrThrow([Promise.reject(new Error('first')), slow, Promise.reject(new Error('second'))]).catch((e: unknown) => e);
    expect((err as Error).message).toBe('first');
    expect(slowDone).toBe(true);
  });
});
