import { describe, expect, it } from 'vitest';
import { LazyTransfers } from '../../src/agent/lazy-transfers.js';

describe('waiting for a lazy restore to complete', () => {
  it('should hold a dump until the transfer is done, and not hold other sessions', async () => {
    const lazy = new LazyTransfers();
    let finish!: () => void;
    lazy.track('s00000001', new Promise<void>((r) => (finish = r)));
    let settled = false;
    const waiting = lazy.settled('s00000001', 5_000).then(() => (settled = true));
    await lazy.settled('s00000002', 5_000); // nothing in flight: at once
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false);
    finish();
    await waiting;
    expect(settled).toBe(true);
    await lazy.settled('s00000001', 5_000); // forgotten once done
  });

  it('should refuse with a conflict when the transfer takes too long', async () => {
    const lazy = new LazyTransfers();
    lazy.track('s00000001', new Promise<void>(() => undefined));
    await expect(lazy.settled('s00000001', 30)).rejects.toMatchObject({ code: 'conflict', message: expect.stringContaining('still arriving') });
  });

  it('should tell when a transfer has ended, however long it takes and however it ends, never rejecting', async () => {
    const lazy = new LazyTransfers();
    let fail!: (err: Error) => void;
    lazy.track('s00000001', new Promise<void>((_, reject) => (fail = reject)));
    let ended = false;
    const end = lazy.ended('s00000001').then(() => (ended = true));
    await new Promise((r) => setTimeout(r, 40));
    expect(ended).toBe(false);
    fail(new Error('the lazy-pages daemon failed'));
    await end;
    expect(ended).toBe(true);
    await lazy.ended('s00000002'); // nothing in flight: at once
  });
});
