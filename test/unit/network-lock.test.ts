import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasLockRules, inNetns, letResetsThrough, removeLockRules } from '../../src/criu/network-lock.js';
import { leftOutConnectionsOf, resetLeftOutConnections, type TcpConnection } from '../../src/criu/left-out-connections.js';
import { run, waitFor } from '../../src/util/exec.js';
import { killQuietly } from '../../src/util/proc.js';

// A namespace of the test's own, locked the way criu locks a dumped session's (criu/net.c): an nftables table with
// output and input chains that drop all but criu's own marked packets, and the iptables chain CRIU.
const name = `hstest-lock-${process.pid}`;
const netns = `/run/netns/${name}`;
const left: TcpConnection = { family: 4, local: { address: '10.98.1.2', port: 8888 }, remote: { address: '10.98.1.1', port: 40123 } };
const left6: TcpConnection = { family: 6, local: { address: 'fd00:98::2', port: 8888 }, remote: { address: 'fd00:98::1', port: 40124 } };

async function lockLikeCriu(table: string, chains: readonly string[]): Promise<void> {
  const commands = [`add table inet ${table}`, ...chains.flatMap((c) => [`add chain inet ${table} ${c} { type filter hook ${c} priority 0; policy drop; }`, `add rule inet ${table} ${c} meta mark 0xC114 accept`])];
  await inNetns(netns, 'nft', [commands.join('; ')], { mustSucceed: true });
}

describe("criu's network lock in a session's namespace", () => {
  beforeEach(async () => {
    await run('ip', ['netns', 'add', name], { timeoutMs: 5_000 });
  });
  afterEach(async () => {
    await run('ip', ['netns', 'del', name], { timeoutMs: 5_000, allowFailure: true });
  });

  it("should let a left-out connection's reset through every lock, at the head of each, and nothing else of it", async () => {
    await lockLikeCriu('CRIU-4242', ['output', 'input']);
    for (const tool of ['iptables', 'ip6tables']) {
      await inNetns(netns, tool, ['-w', '-N', 'CRIU'], { mustSucceed: true });
      await inNetns(netns, tool, ['-w', '-A', 'CRIU', '-j', 'DROP'], { mustSucceed: true });
    }
    await letResetsThrough(netns, [left, left6]);
    const output = (await inNetns(netns, 'nft', ['list', 'chain', 'inet', 'CRIU-4242', 'output'], { mustSucceed: true })).stdout;
    const rules = output.split('\n').filter((l) => /accept|drop/.test(l) && !/policy/.test(l)).map((l) => l.trim());
    expect(rules).toHaveLength(3);
    // Each inserted at the head, so the last first; nft prints the matches in an order of its own.
    for (const part of ['ip6 saddr fd00:98::2 ', 'tcp sport 8888 ', 'ip6 daddr fd00:98::1 ', 'tcp dport 40124 ', 'tcp flags & rst == rst accept']) expect(rules[0]).toContain(part);
    for (const part of ['ip saddr 10.98.1.2 ', 'tcp sport 8888 ', 'ip daddr 10.98.1.1 ', 'tcp dport 40123 ', 'tcp flags & rst == rst accept']) expect(rules[1]).toContain(part);
    expect(rules[2]).toMatch(/meta mark 0x0000c114 accept/);
    const chain = (await inNetns(netns, 'iptables', ['-w', '-S', 'CRIU'], { mustSucceed: true })).stdout.trim().split('\n');
    expect(chain[1]).toBe('-A CRIU -s 10.98.1.2/32 -d 10.98.1.1/32 -p tcp -m tcp --sport 8888 --dport 40123 --tcp-flags RST RST -j ACCEPT');
    expect(chain[2]).toBe('-A CRIU -j DROP');
    const chain6 = (await inNetns(netns, 'ip6tables', ['-w', '-S', 'CRIU'], { mustSucceed: true })).stdout.trim().split('\n');
    expect(chain6[1]).toBe('-A CRIU -s fd00:98::2/128 -d fd00:98::1/128 -p tcp -m tcp --sport 8888 --dport 40124 --tcp-flags RST RST -j ACCEPT');
    expect(chain6[2]).toBe('-A CRIU -j DROP');
    expect(await hasLockRules(netns)).toBe(true);
    expect(await removeLockRules(netns)).toBe(true);
    expect(await hasLockRules(netns)).toBe(false);
  });

  it('should throw where a rule is refused, not report the reset let through', async () => {
    // A table of criu's name without the chain the rule goes into: nft refuses the rule.
    await lockLikeCriu('CRIU-4243', ['input']);
    await expect(letResetsThrough(netns, [left])).rejects.toThrow(/nft.*(No such file or directory|does not exist)/s);
  });
});

// A server that never accepts, and a client whose request waits in its listen queue: what a dump leaves out.
const SERVER_PY = `
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 8888))
s.listen(8)
print('ready', flush=True)
time.sleep(120)
`;
const CLIENT_PY = `
import socket, sys
c = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
c.bind((sys.argv[1], 0))
c.connect((sys.argv[2], 8888))
c.sendall(b'GET /api/status HTTP/1.0\\r\\n\\r\\n')
c.settimeout(15)
try:
    print('answered' if c.recv(1) else 'closed', flush=True)
except ConnectionResetError:
    print('reset', flush=True)
except socket.timeout:
    print('timeout', flush=True)
`;

describe("the requests a dump leaves out, reset through criu's lock", () => {
  const started: ChildProcess[] = [];
  const python = (script: string, ...args: string[]): ChildProcess => {
    const child = spawn('ip', ['netns', 'exec', name, '/usr/bin/python3', '-I', '-c', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child);
    return child;
  };
  const firstLine = async (child: ChildProcess): Promise<string> => {
    const [line] = (await once(createInterface({ input: child.stdout as NodeJS.ReadableStream }), 'line')) as [string];
    return line;
  };

  beforeEach(async () => {
    await run('ip', ['netns', 'add', name], { timeoutMs: 5_000 });
    await run('ip', ['-n', name, '-batch', '-'], { input: 'link set lo up\naddr add 10.98.1.2/32 dev lo\naddr add 10.98.1.1/32 dev lo\naddr add fd00:98::2/128 dev lo\naddr add fd00:98::1/128 dev lo\n', timeoutMs: 5_000 });
  });
  afterEach(async () => {
    for (const c of started.splice(0)) if (c.pid !== undefined) killQuietly(c.pid);
    await run('ip', ['netns', 'del', name], { timeoutMs: 5_000, allowFailure: true });
  });

  it('should find them by their server, IPv4 and IPv6, and reset each at once, its reset let out of the lock', async () => {
    const server4 = python(SERVER_PY, '10.98.1.2');
    const server6 = python(SERVER_PY, 'fd00:98::2');
    expect([await firstLine(server4), await firstLine(server6)]).toEqual(['ready', 'ready']);
    const answers = [python(CLIENT_PY, '10.98.1.1', '10.98.1.2'), python(CLIENT_PY, 'fd00:98::1', 'fd00:98::2')].map(firstLine);
    // Both in the one namespace here: its tables hold both ends of each, the clients' own (accepted, with a socket) not counted.
    const pid = server4.pid as number;
    await waitFor('both requests to wait in the listen queues', async () => ((await leftOutConnectionsOf(pid)).length === 2 ? true : undefined), { timeoutMs: 5_000, intervalMs: 20 });
    // criu's lock on the way out; not its input chain, which would drop the reset on its way in to a client in this namespace.
    await lockLikeCriu('CRIU-4244', ['output']);
    const t0 = Date.now();
    const reset = await resetLeftOutConnections(pid);
    expect(reset.map((c) => `${c.remote.address}:${c.remote.port} > ${c.local.address}:${c.local.port}`).sort()).toEqual(
      expect.arrayContaining([expect.stringMatching(/^10\.98\.1\.1:\d+ > 10\.98\.1\.2:8888$/), expect.stringMatching(/^fd00:98:0:0:0:0:0:1:\d+ > fd00:98:0:0:0:0:0:2:8888$/)]),
    );
    expect(await Promise.all(answers)).toEqual(['reset', 'reset']);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await leftOutConnectionsOf(pid)).toEqual([]);
  });
});
