import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasLockRules, inNetns, letResetsThrough, removeLockRules } from '../../src/criu/network-lock.js';
import type { TcpConnection } from '../../src/criu/left-out-connections.js';
import { run } from '../../src/util/exec.js';

// A namespace of the test's own, locked the way criu locks a dumped session's (criu/net.c): an nftables table with
// output and input chains that drop all but criu's own marked packets, and the iptables chain CRIU.
const name = `hstest-lock-${process.pid}`;
const netns = `/run/netns/${name}`;
const left: TcpConnection = { family: 4, local: { address: '10.98.1.2', port: 8888 }, remote: { address: '10.98.1.1', port: 40123 } };

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
    await inNetns(netns, 'iptables', ['-w', '-N', 'CRIU'], { mustSucceed: true });
    await inNetns(netns, 'iptables', ['-w', '-A', 'CRIU', '-j', 'DROP'], { mustSucceed: true });
    await letResetsThrough(netns, [left]);
    const output = (await inNetns(netns, 'nft', ['list', 'chain', 'inet', 'CRIU-4242', 'output'], { mustSucceed: true })).stdout;
    const rules = output.split('\n').filter((l) => /accept|drop/.test(l) && !/policy/.test(l)).map((l) => l.trim());
    expect(rules).toHaveLength(2);
    // nft prints the matches in an order of its own.
    for (const part of ['ip saddr 10.98.1.2 ', 'tcp sport 8888 ', 'ip daddr 10.98.1.1 ', 'tcp dport 40123 ', 'tcp flags & rst == rst accept']) expect(rules[0]).toContain(part);
    expect(rules[1]).toMatch(/meta mark 0x0000c114 accept/);
    const chain = (await inNetns(netns, 'iptables', ['-w', '-S', 'CRIU'], { mustSucceed: true })).stdout.trim().split('\n');
    expect(chain[1]).toBe('-A CRIU -s 10.98.1.2/32 -d 10.98.1.1/32 -p tcp -m tcp --sport 8888 --dport 40123 --tcp-flags RST RST -j ACCEPT');
    expect(chain[2]).toBe('-A CRIU -j DROP');
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
