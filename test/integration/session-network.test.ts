import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JupyterRest } from '../../src/agent/jupyter-rest.js';
import { claimSessionNetns, createSessionNetwork, hostVethName, macFor, netnsFile, netnsName, ownNetworkNames, prepareSessionNetwork, removeNamedNetwork, removeSessionNetwork, removeStagedNetworks, stagingNetworkNames, stagingOwner } from '../../src/agent/network.js';
import { killQuietly } from '../../src/util/proc.js';
import { run } from '../../src/util/exec.js';

describe("a session's network", () => {
  const id = `s${randomBytes(4).toString('hex')}`;
  const bridge = { name: `hsnt${randomBytes(2).toString('hex')}`, subnet: '10.233.7.0/24' };
  const net = { ip: '10.233.7.2', prefixLength: 24, gateway: '10.233.7.1', mac: macFor(id), hostVeth: hostVethName(id), port: 8888 };

  beforeAll(async () => {
    await run('ip', ['link', 'add', bridge.name, 'type', 'bridge']);
    await run('ip', ['addr', 'add', `${net.gateway}/24`, 'dev', bridge.name]);
    await run('ip', ['link', 'set', bridge.name, 'up']);
  });
  afterAll(async () => {
    await removeSessionNetwork(id, net);
    await removeNamedNetwork(stagingNetworkNames(id));
    await run('ip', ['link', 'del', bridge.name], { allowFailure: true });
  });

  it('should be made with its address, MAC and route, its bridge end held down when asked', async () => {
    await createSessionNetwork(id, net, bridge, { hostSide: 'down' });
    expect((await run('ip', ['-n', netnsName(id), '-br', 'link', 'show', 'eth0'])).stdout).toContain(net.mac);
    expect((await run('ip', ['-n', netnsName(id), '-br', 'addr', 'show', 'eth0'])).stdout).toContain(`${net.ip}/24`);
    expect((await run('ip', ['-n', netnsName(id), 'route', 'show', 'default'])).stdout).toContain(`via ${net.gateway}`);
    expect((await run('ip', ['-br', 'link', 'show', net.hostVeth])).stdout).toMatch(/\bDOWN\b/);
    expect((await run('ip', ['-d', 'link', 'show', net.hostVeth])).stdout).toContain(`master ${bridge.name}`);
  });

  it("should be made ahead under staging names, and take the session's own once its processes run in it", async () => {
    // The session's own names are taken (as on test hosts, by the source's copy; here the test above's network).
    expect(existsSync(netnsFile(netnsName(id)))).toBe(true);
    const staged = stagingNetworkNames(id);
    expect(staged.hostVeth.length).toBeLessThanOrEqual(15);
    await prepareSessionNetwork(staged, net, bridge);
    // One a killed agent left is made again.
    await prepareSessionNetwork(staged, net, bridge);
    expect((await run('ip', ['-n', staged.netns, '-br', 'addr', 'show', 'eth0'])).stdout).toContain(`${net.ip}/24`);
    expect((await run('ip', ['-n', staged.netns, '-br', 'link', 'show', 'eth0'])).stdout).toContain(net.mac);
    expect((await run('ip', ['-br', 'link', 'show', staged.hostVeth])).stdout).toMatch(/\bDOWN\b/);
    // A process restored into it.
    const inside = spawn('ip', ['netns', 'exec', staged.netns, 'sleep', '60'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const pid = inside.pid as number;
      const [runsIn, stagedNs] = await Promise.all([stat(`/proc/${pid}/ns/net`), stat(netnsFile(staged.netns))]);
      expect(runsIn.ino).toBe(stagedNs.ino);
      await claimSessionNetns(id, net, pid);
      const own = await stat(netnsFile(netnsName(id)));
      expect([own.dev, own.ino]).toEqual([runsIn.dev, runsIn.ino]);
      expect(existsSync(netnsFile(staged.netns))).toBe(false);
      expect((await run('ip', ['link', 'show', staged.hostVeth], { allowFailure: true })).stdout).toBe('');
      // Its bridge end, under the session's veth name (the older one deleted), is up.
      expect((await run('ip', ['-d', 'link', 'show', net.hostVeth])).stdout).toContain(`master ${bridge.name}`);
      expect((await run('ip', ['-br', 'link', 'show', net.hostVeth])).stdout).not.toMatch(/\bDOWN\b/);
    } finally {
      if (inside.pid !== undefined) killQuietly(inside.pid, 'SIGKILL');
    }
  });

  it("should make this node forget the MAC the address had before (another session's), where it is made ahead and where it is made at once", async () => {
    for (const staged of [true, false]) {
      const other = `s${randomBytes(4).toString('hex')}`;
      const theirs = { ...net, ip: '10.233.7.4', mac: macFor(other), hostVeth: hostVethName(other) };
      const names = staged ? stagingNetworkNames(other) : ownNetworkNames(other, theirs);
      // The session that held the address before, as this node last saw it: confirmed, its MAC not this one's.
      await run('ip', ['neigh', 'replace', theirs.ip, 'lladdr', '02:00:5e:00:00:01', 'dev', bridge.name, 'nud', 'reachable']);
      try {
        if (staged) await prepareSessionNetwork(names, theirs, bridge);
        else await createSessionNetwork(other, theirs, bridge);
        // No entry: the agent's first request to the session asks for the address afresh (to the old MAC it was lost).
        expect((await run('ip', ['neigh', 'show', theirs.ip, 'dev', bridge.name])).stdout.trim()).toBe('');
      } finally {
        await removeNamedNetwork(names);
        await run('ip', ['neigh', 'del', theirs.ip, 'dev', bridge.name], { allowFailure: true });
      }
    }
  });

  it('should be removed, once its agent is back, when its agent stopped while the move streamed in; and not by another agent', async () => {
    const other = `s${randomBytes(4).toString('hex')}`;
    const staged = stagingNetworkNames(other);
    const [mine, theirs] = [stagingOwner('/var/lib/hubshift-a'), stagingOwner('/var/lib/hubshift-b')];
    try {
      await prepareSessionNetwork(staged, { ...net, ip: '10.233.7.3', mac: macFor(other), hostVeth: hostVethName(other) }, bridge, mine);
      expect(await removeStagedNetworks(theirs)).not.toContain(other);
      expect(existsSync(netnsFile(staged.netns))).toBe(true);
      expect(await removeStagedNetworks(mine)).toContain(other);
      expect(existsSync(netnsFile(staged.netns))).toBe(false);
      expect((await run('ip', ['link', 'show', staged.hostVeth], { allowFailure: true })).stdout).toBe('');
    } finally {
      await removeNamedNetwork(staged);
    }
  });
});

describe("a Jupyter server's REST client", () => {
  let server: Server;
  let connections = 0;
  beforeAll(async () => {
    server = createServer((req, res) => res.end(JSON.stringify({ started: 'a', last_activity: 'b', connections: 0, kernels: 0 })));
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('should open a connection for every request: the address may be another server by the next one', async () => {
    const rest = new JupyterRest(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, 'token');
    for (let i = 0; i < 3; i++) await rest.status();
    expect(connections).toBe(3);
  });
});
