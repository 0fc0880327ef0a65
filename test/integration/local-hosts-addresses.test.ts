import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/agent-client.js';
import { LocalProvider, localHostSpecs } from '../../src/cloud/local-provider.js';
import type { HostRecord } from '../../src/core/cloud.js';
import { UpstreamError } from '../../src/core/errors.js';
import { waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { removeLeftSessions } from '../helpers/left-sessions.js';

/** The error a start refused for want of an address gives, or null if it started (then the session is removed). */
async function startRefusal(client: AgentClient): Promise<string | null> {
  try {
    const s = await client.startSession('next');
    await client.removeSession(s.id);
    return null;
  } catch (err) {
    if (err instanceof UpstreamError) return err.message;
    throw err;
  }
}

/**
 * A moved session keeps the address its first host gave it: that host must
 * not give it to another session while the moved one runs anywhere. Each
 * host here gives out one address, so a start shows at once which are free.
 */
describe('the addresses of sessions moved between local test hosts', () => {
  let stateDir: string;
  let provider: LocalProvider;
  let hosts: HostRecord[];
  let tokens: string[];
  let clients: AgentClient[];

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'hubshift-lent-'));
    provider = new LocalProvider({ stateDir, bridge: 'hsla0', subnet: '10.249.0.0/16', addressPoolSize: 1, incomingTimeoutSeconds: 4, moveIdleTimeoutSeconds: 5, logLevel: 'warn' });
    hosts = await provider.create(localHostSpecs(3, 0));
    tokens = await Promise.all(hosts.map(async (h) => (await readFile(h.tokenFile, 'utf8')).trim()));
    clients = hosts.map((h, i) => new AgentClient(h.agentUrl, tokens[i]!));
  });

  afterAll(async () => {
    await provider?.removeAll();
    await rm(stateDir, { recursive: true, force: true });
  });

  afterEach(async () => {
    await removeLeftSessions(clients ?? []);
  });

  const to = (i: number) => ({ url: hosts[i]!.agentUrl, token: tokens[i]! });
  const lentRecords = async (i: number) => (await readdir(join(hosts[i]!.dataDir, 'lent')).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));

  it('should keep its address from the sessions its first host starts, along a chain of moves, until it is removed', async () => {
    const [a, b, c] = clients as [AgentClient, AgentClient, AgentClient];
    const s = await a.startSession('lent');
    const there = await a.move(s.id, to(1), 'post-copy');
    expect(there.url).toBe(s.url);
    // The first host's one address is the moved session's, which runs on the second: a start is refused, naming it.
    const refused = await startRefusal(a);
    expect(refused).toMatch(/no free address/);
    expect(refused).toContain(s.id);
    expect(refused).toContain(hosts[1]!.agentUrl);
    // On to the third, stop-and-copy: the first asks the second, which asks the third.
    await b.move(s.id, to(2), 'stop-and-copy');
    expect(await startRefusal(a)).toContain(s.id);
    expect((await c.getSession(s.id)).url).toBe(s.url);
    // Gone from the end of the chain: the address is free again, and every record of the chain is forgotten.
    await c.removeSession(s.id);
    const next = await a.startSession('next');
    expect(next.url).toBe(s.url);
    expect(await lentRecords(0)).not.toContain(`${s.id}.json`);
    expect(await lentRecords(1)).not.toContain(`${s.id}.json`);
  });

  it('should hold its address by its own record again once moved back, and free it when removed there', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('back');
    await a.move(s.id, to(1), 'post-copy');
    expect(await lentRecords(0)).toContain(`${s.id}.json`);
    await b.move(s.id, to(0), 'post-copy');
    // Home again: no record of it lent here; the second host lends it back.
    expect(await lentRecords(0)).not.toContain(`${s.id}.json`);
    expect(await lentRecords(1)).toContain(`${s.id}.json`);
    expect(await startRefusal(a)).toMatch(/no free address/);
    await a.removeSession(s.id);
    expect(await startRefusal(a)).toBeNull();
  });

  it('should keep the address while the host it went to cannot be asked, and free it at its own start once that host says the session is gone', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('away');
    await a.move(s.id, to(1), 'stop-and-copy');
    const pid = (await provider.hosts())[1]!.agentPid!;
    killQuietly(pid, 'SIGTERM');
    await waitFor('the second agent to stop', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 20_000 });
    const refused = await startRefusal(a);
    expect(refused).toContain(s.id);
    // Its session ran on through the agent's restart; removed there, the first host's agent frees the address as it
    // starts, before any start asks.
    await provider.restartAgent(hosts[1]!.name);
    await b.removeSession(s.id);
    expect(await lentRecords(0)).toContain(`${s.id}.json`);
    await provider.restartAgent(hosts[0]!.name);
    await waitFor('the first agent to forget the address', async () => ((await lentRecords(0)).includes(`${s.id}.json`) ? undefined : true), { timeoutMs: 10_000 });
    expect(await startRefusal(a)).toBeNull();
  });
});
