import { createSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { allocateAddress, announce, hostVethName, macFor, parseSubnet } from '../../src/agent/network.js';

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
      await announce(process.pid, '127.0.0.1');
      expect(await Promise.race([got, new Promise((resolve) => setTimeout(() => resolve('nothing within 2 s'), 2_000))])).toBe('hubshift');
    } finally {
      sock.close();
    }
  });
});
