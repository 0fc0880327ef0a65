import { createServer, connect, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardPageServer, removeStaleGuards } from '../../src/agent/page-server-guard.js';
import { run } from '../../src/util/exec.js';

/** Connects from `from` and says whether the listener answered (it writes one byte to each connection). */
function answers(port: number, from: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c: Socket = connect({ host: '127.0.0.1', port, localAddress: from });
    c.setTimeout(3_000, () => (c.destroy(), resolve(false)));
    c.once('data', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}

const tables = async (): Promise<string> => (await run('nft', ['list', 'tables'])).stdout;

describe("a page server's guard (criu's page servers have no authentication)", () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    // Stands in for criu's page server: a listener on this node's address.
    server = createServer((s) => s.end('x'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await run('nft', ['delete', 'table', 'inet', `hubshift_ps_${port}`], { allowFailure: true });
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('should admit only the peer host while it stands, and leave nothing behind', async () => {
    expect(await answers(port, '127.0.0.3')).toBe(true);
    const guard = await guardPageServer({ address: '127.0.0.1', port }, '127.0.0.2', pino({ level: 'silent' }));
    expect(await tables()).toContain(`table inet hubshift_ps_${port}`);
    expect(await answers(port, '127.0.0.2')).toBe(true);
    expect(await answers(port, '127.0.0.3')).toBe(false);
    await guard.remove();
    await guard.remove();
    expect(await tables()).not.toContain(`hubshift_ps_${port}`);
    expect(await answers(port, '127.0.0.3')).toBe(true);
  });

  it('should replace a guard a dead agent left on the same port, and remove those left at the start', async () => {
    const log = pino({ level: 'silent' });
    await guardPageServer({ address: '127.0.0.1', port }, '127.0.0.4', log);
    // A new page server on that port for another peer: the old rule must not keep it out.
    const guard = await guardPageServer({ address: '127.0.0.1', port }, '127.0.0.2', log);
    expect(await answers(port, '127.0.0.2')).toBe(true);
    expect(await answers(port, '127.0.0.4')).toBe(false);
    expect(await removeStaleGuards()).toBeGreaterThanOrEqual(1);
    expect(await tables()).not.toContain(`hubshift_ps_${port}`);
    await guard.remove();
  });
});
