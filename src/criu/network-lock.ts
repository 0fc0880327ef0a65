import { run } from '../util/exec.js';
import type { TcpConnection } from './left-out-connections.js';

/**
 * criu locks a dumped network namespace inside that namespace: with
 * iptables, a chain named CRIU hooked from INPUT and OUTPUT; with nftables
 * (`--network-lock nftables`), a table `inet CRIU` (or `inet CRIU-ID` for
 * single connections). A criu that dies in the middle leaves them behind and
 * the session unreachable. These find and remove both kinds; `netns` is a
 * path like /proc/PID/ns/net or /run/netns/NAME.
 */
const TOOLS = ['iptables', 'ip6tables'] as const;

/** Runs a command in the network namespace `netns`; its failure is returned, or thrown where `mustSucceed`. */
export function inNetns(netns: string, cmd: string, args: string[], opts: { mustSucceed?: boolean } = {}) {
  return run('nsenter', [`--net=${netns}`, cmd, ...args], { allowFailure: !opts.mustSucceed, timeoutMs: 10_000 });
}

/** The nftables tables criu made in the namespace (`inet CRIU...`); none where nft cannot list them. */
async function nftLockTables(netns: string): Promise<string[]> {
  const r = await inNetns(netns, 'nft', ['list', 'tables']);
  if (r.code !== 0) return [];
  return [...r.stdout.matchAll(/^table inet (CRIU(?:-\S+)?)$/gm)].map((m) => m[1] as string);
}

/** Whether criu's iptables chain CRIU is in the namespace, for `tool` (iptables or ip6tables). */
async function hasIptablesLock(netns: string, tool: (typeof TOOLS)[number]): Promise<boolean> {
  return /^-N CRIU$/m.test((await inNetns(netns, tool, ['-w', '-S'])).stdout);
}

export async function hasLockRules(netns: string): Promise<boolean> {
  for (const tool of TOOLS) {
    if (await hasIptablesLock(netns, tool)) return true;
  }
  return (await nftLockTables(netns)).length > 0;
}

export async function removeLockRules(netns: string): Promise<boolean> {
  let removed = false;
  for (const tool of TOOLS) {
    if (!(await hasIptablesLock(netns, tool))) continue;
    removed = true;
    for (const chain of ['INPUT', 'OUTPUT']) {
      // A jump may have been added more than once; delete until none is left.
      for (let i = 0; i < 8; i++) {
        const r = await inNetns(netns, tool, ['-w', '-D', chain, '-j', 'CRIU']);
        if (r.code !== 0) break;
      }
    }
    await inNetns(netns, tool, ['-w', '-F', 'CRIU']);
    await inNetns(netns, tool, ['-w', '-X', 'CRIU']);
  }
  for (const table of await nftLockTables(netns)) {
    removed = true;
    await inNetns(netns, 'nft', ['delete', 'table', 'inet', table]);
  }
  return removed;
}

/**
 * Lets out, through criu's lock in `netns`, the resets of these
 * connections (and nothing else of theirs): an accept rule for each at the
 * head of every lock criu made there, nftables tables and iptables chains.
 * A rule refused is thrown: the reset it was for would be dropped.
 */
export async function letResetsThrough(netns: string, conns: readonly TcpConnection[]): Promise<void> {
  for (const table of await nftLockTables(netns)) {
    const rules = conns.map((c) => {
      const ip = c.family === 4 ? 'ip' : 'ip6';
      return `insert rule inet ${table} output ${ip} saddr ${c.local.address} tcp sport ${c.local.port} ${ip} daddr ${c.remote.address} tcp dport ${c.remote.port} tcp flags & rst == rst accept`;
    });
    await inNetns(netns, 'nft', [rules.join('; ')], { mustSucceed: true });
  }
  for (const tool of TOOLS) {
    const family = tool === 'iptables' ? 4 : 6;
    const mine = conns.filter((c) => c.family === family);
    if (!mine.length || !(await hasIptablesLock(netns, tool))) continue;
    for (const c of mine) {
      await inNetns(netns, tool, ['-w', '-I', 'CRIU', '1', '-p', 'tcp', '-s', c.local.address, '--sport', String(c.local.port), '-d', c.remote.address, '--dport', String(c.remote.port), '--tcp-flags', 'RST', 'RST', '-j', 'ACCEPT'], { mustSucceed: true });
    }
  }
}
