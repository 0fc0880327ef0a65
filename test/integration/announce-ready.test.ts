import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareAnnounce } from '../../src/agent/network.js';
import { run, sleep, waitFor } from '../../src/util/exec.js';

/**
 * A session's announcement made ready in a namespace of this test's own (a
 * veth end whose peer stays down, so nothing answers ARP): a restore's is
 * made ready before criu has restored the sockets, whose first packets leave
 * unanswered neighbour entries behind, so it flushes them when fired; a
 * moved-in session's, made ready after, flushes them at once.
 */
describe('an announcement made ready in a named namespace', () => {
  const netns = `hsann${process.pid}`;
  const inside = 'hsannA';
  const outside = 'hsannB';
  const netnsFile = `/run/netns/${netns}`;
  const ip = (...args: string[]): Promise<unknown> => run('ip', args, { timeoutMs: 10_000 });
  // The gateway the announcement goes to, and another address a restored socket asked for while the link was down.
  const gateway = '10.249.77.2';
  const stale = '10.249.77.3';

  beforeAll(async () => {
    await ip('netns', 'add', netns);
    await ip('link', 'add', inside, 'type', 'veth', 'peer', 'name', outside);
    await ip('link', 'set', inside, 'netns', netns);
    await ip('-n', netns, 'addr', 'add', '10.249.77.1/24', 'dev', inside);
    await ip('-n', netns, 'link', 'set', inside, 'up');
  });
  afterAll(async () => {
    // The veth goes with the namespace.
    await run('ip', ['netns', 'del', netns], { allowFailure: true, timeoutMs: 10_000 });
    await run('ip', ['link', 'del', outside], { allowFailure: true, timeoutMs: 10_000 });
  });

  const staleEntry = async (): Promise<boolean> => {
    const r = await run('ip', ['-n', netns, 'neigh', 'show', stale, 'dev', inside], { timeoutMs: 10_000 });
    return r.stdout.trim() !== '';
  };
  // A packet toward an address nobody answers: its neighbour entry is left incomplete, then failed.
  const leaveStaleEntry = async (): Promise<void> => {
    await run('ip', ['netns', 'exec', netns, '/bin/bash', '-c', `printf x > /dev/udp/${stale}/9`], { timeoutMs: 10_000 });
    await waitFor('the unanswered neighbour entry', async () => ((await staleEntry()) ? true : undefined), { timeoutMs: 5_000, intervalMs: 20 });
  };

  it("should flush the unanswered entries only when fired, for a restore's", async () => {
    await leaveStaleEntry();
    const a = await prepareAnnounce({ netnsFile }, gateway, inside, 9, { flushAtFire: true });
    await sleep(300);
    expect(await staleEntry()).toBe(true);
    await a.fire();
    expect(await staleEntry()).toBe(false);
  });

  it("should flush them at once for a moved-in session's, and still send when fired", async () => {
    await leaveStaleEntry();
    const a = await prepareAnnounce({ netnsFile }, gateway, inside, 9);
    await waitFor('the flush', async () => ((await staleEntry()) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    await a.fire();
    // The packet to the gateway went out: its own neighbour entry now stands (nothing answers it here).
    const r = await run('ip', ['-n', netns, 'neigh', 'show', gateway, 'dev', inside], { timeoutMs: 10_000 });
    expect(r.stdout.trim()).not.toBe('');
  });

  it('should end without sending when cancelled', async () => {
    await run('ip', ['-n', netns, 'neigh', 'flush', 'dev', inside], { timeoutMs: 10_000 });
    await leaveStaleEntry();
    const a = await prepareAnnounce({ netnsFile }, gateway, inside, 9, { flushAtFire: true });
    a.cancel();
    await a.fire();
    await sleep(300);
    expect(await staleEntry()).toBe(true);
    const r = await run('ip', ['-n', netns, 'neigh', 'show', gateway, 'dev', inside], { timeoutMs: 10_000 });
    expect(r.stdout.trim()).toBe('');
  });
});
