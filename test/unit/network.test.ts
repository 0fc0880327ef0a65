import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { allocateAddress, announce, hostVethName, macFor, parseSubnet } from '../../src/agent/network.js';
import { run, waitFor } from '../../src/util/exec.js';
import { killQuietly } from '../../src/util/proc.js';

describe('session addressing', () => {
  it('should give the bridge the first address and sessions the lowest free ones', () => {
    expect(parseSubnet('10.213.0.0/24').gateway).toBe('10.213.0.1');
    expect(allocateAddress('10.213.0.0/24', new Set())).toBe('10.213.0.2');
    expect(allocateAddress('10.213.0.0/24', new Set(['10.213.0.2', '10.213.0.3']))).toBe('10.213.0.4');
    expect(allocateAddress('10.213.0.0/24', new Set(['10.213.0.100']), { first: 100, last: 199 })).toBe('10.213.0.101');
    expect(() => allocateAddress('10.213.0.0/24', new Set(['10.213.0.100']), { first: 100, last: 100 })).toThrow(/hosts 100-100/);
    expect(parseSubnet('10.213.7.9/16').gateway).toBe('10.213.0.1');
  });

  it('should say when a subnet is full, and refuse what is not a subnet', () => {
    expect(() => allocateAddress('10.0.0.0/29', new Set(['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']))).toThrow(/no free address left in 10.0.0.0\/29/);
    for (const bad of ['10.0.0.0', '10.0.0.0/31', '300.0.0.0/24', 'eth0']) expect(() => parseSubnet(bad)).toThrow(/not an IPv4 CIDR/);
  });

  it('should derive a stable, locally administered MAC and a short veth name from the session id', () => {
    expect(macFor('s1a2b3c4d')).toBe(macFor('s1a2b3c4d'));
    expect(macFor('s1a2b3c4d')).not.toBe(macFor('s1a2b3c4e'));
    expect(macFor('s1a2b3c4d')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(hostVethName('s1a2b3c4d')).toBe('hsv1a2b3c4d');
    expect(hostVethName('s1a2b3c4d').length).toBeLessThanOrEqual(15);
  });
});

describe("a restored session's announcement", () => {
  it("should send one UDP packet to the gateway from inside the process's network namespace", async () => {
    // This process's own namespace stands for the session's, loopback for its gateway (port 9, discard).
    const sock = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(9, '127.0.0.1', () => resolve());
    });
    try {
      const got = new Promise<string>((resolve) => sock.once('message', (m) => resolve(m.toString())));
      // lo: only this namespace's loopback entries are looked at (the machine's own eth0 is not the test's).
      await announce(process.pid, '127.0.0.1', 'lo');
      expect(await Promise.race([got, new Promise((resolve) => setTimeout(() => resolve('nothing within 2 s'), 2_000))])).toBe('hubshift');
    } finally {
      sock.close();
    }
  });

  it('should ask for the gateway afresh where an earlier request went unanswered (the bridge end was down), not a second later', async () => {
    // Two namespaces of the test's own: the session's (eth0) and one standing for the bridge with the gateway address.
    const ns = `hstest-ann-${process.pid}`;
    const gw = `hstest-gw-${process.pid}`;
    const inNs = (cmd: string): Promise<unknown> => run('ip', ['netns', 'exec', ns, 'bash', '-c', cmd], { timeoutMs: 5_000, allowFailure: true });
    let sleeper: number | undefined;
    try {
      await run('ip', ['netns', 'add', ns], { timeoutMs: 5_000 });
      await run('ip', ['netns', 'add', gw], { timeoutMs: 5_000 });
      await run('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'gw0', 'netns', gw], { timeoutMs: 5_000 });
      await run('ip', ['-n', ns, '-batch', '-'], { input: 'addr add 10.98.0.2/24 dev eth0\nlink set eth0 up\nlink set lo up\n', timeoutMs: 5_000 });
      await run('ip', ['-n', gw, 'addr', 'add', '10.98.0.1/24', 'dev', 'gw0'], { timeoutMs: 5_000 });
      // A packet to the gateway while its end is down: the entry waits unanswered.
      await inNs('printf x > /dev/udp/10.98.0.1/9');
      const neighbour = async (): Promise<string> => ((await run('ip', ['-n', ns, 'neigh', 'show', '10.98.0.1'], { timeoutMs: 5_000 })).stdout as string).trim();
      expect(await neighbour()).toMatch(/INCOMPLETE|FAILED/);
      await run('ip', ['-n', gw, 'link', 'set', 'gw0', 'up'], { timeoutMs: 5_000 });
      const child = spawn('ip', ['netns', 'exec', ns, 'sleep', '30'], { stdio: 'ignore' });
      sleeper = child.pid!;
      await waitFor('the stand-in process to be in the namespace', async () => ((await run('readlink', [`/proc/${sleeper}/ns/net`], { timeoutMs: 5_000, allowFailure: true })).stdout !== (await run('readlink', ['/proc/self/ns/net'], { timeoutMs: 5_000 })).stdout ? true : undefined), { timeoutMs: 5_000, intervalMs: 10 });
      await announce(sleeper, '10.98.0.1');
      // Answered at once; the kernel's own retry would have come a second after the first request.
      await waitFor('the gateway to be known', async () => (/REACHABLE|DELAY|STALE/.test(await neighbour()) ? true : undefined), { timeoutMs: 300, intervalMs: 10 });
    } finally {
      if (sleeper !== undefined) killQuietly(sleeper);
      await run('ip', ['netns', 'del', ns], { timeoutMs: 5_000, allowFailure: true });
      await run('ip', ['netns', 'del', gw], { timeoutMs: 5_000, allowFailure: true });
    }
  });
});
