import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JupyterRest } from '../../src/agent/jupyter-rest.js';
import { createSessionNetwork, hostVethName, macFor, netnsName, removeSessionNetwork } from '../../src/agent/network.js';
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
