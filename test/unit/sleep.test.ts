import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/exec.js';

describe('sleep on a long-lived signal', () => {
  it('should leave no listener on the signal once each sleep is over', async () => {
    const stopping = new AbortController();
    for (let i = 0; i < 20; i++) await sleep(1, stopping.signal);
    expect(getEventListeners(stopping.signal, 'abort')).toHaveLength(0);
  });

  it('should end at once, rejecting, when the signal aborts or has aborted', async () => {
    const stopping = new AbortController();
    const t0 = performance.now();
    const waiting = sleep(10_000, stopping.signal);
    stopping.abort(new Error('agent stopping'));
    await expect(waiting).rejects.toThrow('agent stopping');
    await expect(sleep(10_000, stopping.signal)).rejects.toThrow('agent stopping');
    expect(performance.now() - t0).toBeLessThan(1_000);
  });
});
