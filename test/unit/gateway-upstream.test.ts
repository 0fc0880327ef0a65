import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PlacedSession } from '../../src/core/control.js';
import { BodyCopies } from '../../src/hub/body-copies.js';
import { SessionGateway } from '../../src/hub/gateway.js';
import { GATEWAY_DEFAULTS } from '../../src/hub/gateway-config.js';
import type { SessionDirectory } from '../../src/hub/session-directory.js';

/** What a test started, stopped after it (the gateway, the session's server), last first. */
const started: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const s of started.splice(0).reverse()) await s.close();
});

/** A plain HTTP server on loopback standing for a session's Jupyter server; its URL. */
async function sessionServerWith(handler: RequestListener): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  started.push({
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

/** A gateway whose directory is the test's own record of where ann's session is; `onAsk` sees each look at it. */
async function gatewayTo(record: { now: PlacedSession }, onAsk: () => void = () => undefined): Promise<string> {
  const directory: SessionDirectory = {
    atPath: async (path) => (path.startsWith('/user/ann/') ? record.now : null),
    get: async () => {
      onAsk();
      return record.now;
    },
    wake: async () => undefined,
  };
  const gateway = new SessionGateway(directory, { ...GATEWAY_DEFAULTS, port: 0, pollIntervalMs: 10 }, pino({ level: 'silent' }));
  started.push(gateway);
  return gateway.listen();
}

const session = (url: string, lastCheckpoint: string | null): PlacedSession =>
  PlacedSession.parse({ id: 's0000000001', user: 'ann', node: 'node-a', state: 'running', url, token: 't'.repeat(32), lastCheckpoint, operation: null, hub: { user: 'ann', server: '', prefix: '/user/ann/' } });

/**
 * The gateway's judgement of a request cut before any answer: a PUT is sent
 * again only where its session was checkpointed or moved meanwhile (the
 * server cannot have taken it), never on a cut alone. The session's server
 * here resets the first connection it reads, as a session's dying listen
 * queue does.
 */
describe('SessionGateway, a request cut before any answer', () => {
  /** A session server that resets its first request after reading its body, and answers the others with what they sent. */
  async function sessionServer(onReset: () => void): Promise<{ url: string; bodies: string[] }> {
    const bodies: string[] = [];
    const url = await sessionServerWith((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks).toString());
        if (bodies.length === 1) {
          onReset();
          req.socket.resetAndDestroy();
          return;
        }
        res.writeHead(req.method === 'PUT' ? 201 : 200, { 'Content-Type': 'text/plain' }).end(`saved ${Buffer.concat(chunks).length} bytes`);
      });
    });
    return { url, bodies };
  }

  const put = (gateway: string, body: string): Promise<Response> =>
    fetch(`${gateway}/user/ann/api/contents/note.txt`, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body });

  it('should send a PUT again, body and all, when its session was checkpointed since it was looked up', async () => {
    const record: { now: PlacedSession } = { now: session('http://127.0.0.1:1/', null) };
    const server = await sessionServer(() => {
      // The checkpoint (and the wake) that left the request out, as the scheduler records it.
      record.now = { ...record.now, lastCheckpoint: 'ck-after' };
    });
    record.now = session(server.url, null);
    const body = JSON.stringify({ type: 'file', format: 'text', content: 'x'.repeat(300_000) });
    const res = await put(await gatewayTo(record), body);
    expect(res.status).toBe(201);
    expect(await res.text()).toBe(`saved ${body.length} bytes`);
    expect(server.bodies).toEqual([body, body]);
  });

  it('should send a PUT again when its session moved to another node meanwhile', async () => {
    const record: { now: PlacedSession } = { now: session('http://127.0.0.1:1/', 'ck-0') };
    const server = await sessionServer(() => {
      record.now = { ...record.now, node: 'node-b' };
    });
    record.now = session(server.url, 'ck-0');
    const res = await put(await gatewayTo(record), '{"type":"file"}');
    expect(res.status).toBe(201);
    expect(server.bodies).toHaveLength(2);
  });

  it('should send a GET again on a cut alone, once the session serves', async () => {
    const record: { now: PlacedSession } = { now: session('http://127.0.0.1:1/', 'ck-0') };
    const server = await sessionServer(() => undefined);
    record.now = session(server.url, 'ck-0');
    const res = await fetch(`${await gatewayTo(record)}/user/ann/api/contents/note.txt`);
    expect(res.status).toBe(200);
    expect(server.bodies).toEqual(['', '']);
  });

  it('should not send a PUT again on a cut alone: the server may have done it (502, sent once)', async () => {
    const record: { now: PlacedSession } = { now: session('http://127.0.0.1:1/', 'ck-0') };
    const server = await sessionServer(() => undefined);
    record.now = session(server.url, 'ck-0');
    const res = await put(await gatewayTo(record), '{"type":"file"}');
    expect(res.status).toBe(502);
    expect(((await res.json()) as { message: string }).message).toMatch(/did not answer \(.*ECONNRESET\)/);
    expect(server.bodies).toHaveLength(1);
  });
});

describe('SessionGateway, requests a session is slow to answer', () => {
  it('should ask the scheduler about their session once for all of them, not once a request', async () => {
    const url = await sessionServerWith((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'Content-Type': 'text/plain' }).end('late'), 2_600);
    });
    let asked = 0;
    const base = await gatewayTo({ now: session(url, null) }, () => asked++);
    // Twenty downloads, each unanswered for over two seconds: each looks twice whether its session fell asleep.
    const answers = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/user/ann/files/big.bin`).then((r) => r.text())));
    expect(answers).toEqual(Array.from({ length: 20 }, () => 'late'));
    expect(asked).toBeGreaterThan(0);
    expect(asked).toBeLessThanOrEqual(8);
  });
});

describe('BodyCopies', () => {
  it('should copy a body whole, and give a copy up past the bound of one request or of all of them', async () => {
    const copies = new BodyCopies(8, 12);
    const a = new PassThrough();
    const copyA = copies.copy(a);
    a.end(Buffer.from('1234567'));
    expect((await copyA.whole())?.toString()).toBe('1234567');
    expect(copies.held).toBe(7);
    // 7 + 6 > 12: the second is given up, and what it took is given back.
    const b = new PassThrough();
    const copyB = copies.copy(b);
    b.write(Buffer.from('123'));
    b.end(Buffer.from('456'));
    expect(await copyB.whole()).toBeNull();
    expect(copies.held).toBe(7);
    copyA.release();
    expect(copies.held).toBe(0);
    // Over one request's bound.
    const c = new PassThrough();
    const copyC = copies.copy(c);
    c.end(Buffer.from('123456789'));
    expect(await copyC.whole()).toBeNull();
    expect(copies.held).toBe(0);
  });

  it('should have no whole body of a client gone before its end', async () => {
    const copies = new BodyCopies(8, 12);
    const a = new PassThrough();
    const copy = copies.copy(a);
    a.write(Buffer.from('12'));
    a.destroy();
    expect(await copy.whole()).toBeNull();
    copy.release();
    expect(copies.held).toBe(0);
  });
});
