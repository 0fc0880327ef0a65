import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOLDER_HOPS, holdsSession, settleLentAddresses } from '../../src/agent/address-holders.js';
import type { AgentContext } from '../../src/agent/agent-context.js';
import { LentAddresses } from '../../src/agent/lent-addresses.js';

const TOKEN = 't'.repeat(32);

/** An agent as far as lent addresses go: the sessions it holds, its lent records, and its /held endpoint on loopback. */
interface Holder {
  ctx: AgentContext;
  held: Set<string>;
  url: string;
  asked: number;
}

async function holder(dir: string): Promise<Holder & { server: Server }> {
  const held = new Set<string>();
  const lent = new LentAddresses(dir);
  const ctx = { registry: { find: (id: string) => (held.has(id) ? { id } : undefined) }, lent, log: pino({ level: 'silent' }) } as unknown as AgentContext;
  const h = { ctx, held, url: '', asked: 0 };
  const app = express();
  app.get('/v1/sessions/:id/held', async (req, res) => {
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return void res.status(401).json({ error: { code: 'unauthorized', message: 'wrong token' } });
    h.asked++;
    res.json({ held: await holdsSession(ctx, req.params.id, Number(req.query.hops)) });
  });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  h.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return Object.assign(h, { server });
}

describe('asking after the addresses of moved sessions', () => {
  let dir: string;
  let agents: (Holder & { server: Server })[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-holders-'));
    agents = await Promise.all(['a', 'b', 'c', 'd'].map((n) => holder(join(dir, n))));
  });

  afterAll(async () => {
    for (const a of agents) a.server.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The session moved along `chain` (agents' indexes): each lent it to the next, the last holds it. */
  async function moved(id: string, chain: number[]): Promise<void> {
    for (let i = 0; i + 1 < chain.length; i++) await agents[chain[i]!]!.ctx.lent.lend(id, '10.0.0.2', { url: agents[chain[i + 1]!]!.url, token: TOKEN });
    agents[chain[chain.length - 1]!]!.held.add(id);
  }

  it('should say held by the agent that has it, asking no one', async () => {
    agents[0]!.held.add('s-here');
    const before = agents[1]!.asked;
    expect(await holdsSession(agents[0]!.ctx, 's-here', HOLDER_HOPS)).toBe(true);
    expect(agents[1]!.asked).toBe(before);
    expect(await holdsSession(agents[0]!.ctx, 's-unknown', HOLDER_HOPS)).toBe(false);
  });

  it('should follow a chain of moves to the agent that holds it, and free the address along it once it is gone', async () => {
    await moved('s-chain', [0, 1, 2, 3]);
    expect(await holdsSession(agents[0]!.ctx, 's-chain', HOLDER_HOPS)).toBe(true);
    expect(agents[0]!.ctx.lent.find('s-chain')).toBeDefined();
    agents[3]!.held.delete('s-chain');
    expect(await settleLentAddresses(agents[0]!.ctx)).toBe(1);
    for (const a of agents.slice(0, 3)) expect(a.ctx.lent.find('s-chain')).toBeUndefined();
    // And on disk: a fresh load finds nothing.
    const reloaded = new LentAddresses(join(dir, 'a'));
    await reloaded.load();
    expect(reloaded.find('s-chain')).toBeUndefined();
  });

  it('should take the address as held past its hops, and free nothing there', async () => {
    await moved('s-far', [0, 1, 2, 3]);
    agents[3]!.held.delete('s-far');
    // Two hops: the third agent answers from its own record, without asking the fourth, which no longer has it.
    const fourthAsked = agents[3]!.asked;
    expect(await holdsSession(agents[0]!.ctx, 's-far', 2)).toBe(true);
    expect(agents[3]!.asked).toBe(fourthAsked);
    for (const a of agents.slice(0, 3)) expect(a.ctx.lent.find('s-far')).toBeDefined();
    expect(await holdsSession(agents[0]!.ctx, 's-far', HOLDER_HOPS)).toBe(false);
  });

  it('should keep the address while the agent it went to cannot be asked (gone, or refusing the token)', async () => {
    const gone = await holder(join(dir, 'gone'));
    gone.server.close();
    await agents[0]!.ctx.lent.lend('s-gone', '10.0.0.3', { url: gone.url, token: TOKEN });
    await agents[0]!.ctx.lent.lend('s-token', '10.0.0.4', { url: agents[1]!.url, token: 'x'.repeat(32) });
    expect(await settleLentAddresses(agents[0]!.ctx)).toBe(0);
    expect(agents[0]!.ctx.lent.addresses()).toEqual(expect.arrayContaining(['10.0.0.3', '10.0.0.4']));
  });
});
