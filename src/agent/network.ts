import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { SandboxError } from '../core/errors.js';
import type { SessionNetwork } from '../core/session.js';
import { run, startDetached } from '../util/exec.js';
import { killQuietly } from '../util/proc.js';
import { tcpBytes } from '../util/tcp.js';

/** The agent's bridge and the subnet its sessions take addresses from. */
export interface BridgeConfig {
  name: string;
  /** e.g. 10.213.0.0/24; the bridge takes .1, sessions the rest. */
  subnet: string;
  /**
   * Host numbers within the subnet this agent gives out (default: all).
   * Agents sharing one bridge (test hosts on one machine) take disjoint
   * pools, so a session moved between them keeps an address nobody else has.
   */
  pool?: { first: number; last: number };
  /**
   * The bridge's own address (CIDR). Default: the subnet's gateway. A test
   * host's bridge takes the host's address instead: the gateway is then the
   * segment's, outside the host.
   */
  address?: string;
  /** An interface to enslave to the bridge: a test host's link to the segment its sessions share. */
  uplink?: string;
}

export interface ParsedSubnet {
  base: number;
  prefixLength: number;
  gateway: string;
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

export function parseSubnet(cidr: string): ParsedSubnet {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr);
  const prefixLength = Number(m?.[2]);
  if (!m || prefixLength < 8 || prefixLength > 29 || m[1]!.split('.').some((o) => Number(o) > 255)) {
    throw new SandboxError(`subnet ${cidr} is not an IPv4 CIDR with a prefix between /8 and /29 (for example 10.213.0.0/24)`);
  }
  const mask = (0xffffffff << (32 - prefixLength)) >>> 0;
  const base = (ipToInt(m[1]!) & mask) >>> 0;
  return { base, prefixLength, gateway: intToIp(base + 1) };
}

/** The lowest address in the subnet (after the gateway) that no known session holds. */
export function allocateAddress(cidr: string, taken: ReadonlySet<string>, pool?: { first: number; last: number }): string {
  const { base, prefixLength } = parseSubnet(cidr);
  const size = 2 ** (32 - prefixLength);
  const first = Math.max(2, pool?.first ?? 2);
  const last = Math.min(size - 2, pool?.last ?? size - 2);
  for (let i = first; i <= last; i++) {
    const ip = intToIp(base + i);
    if (!taken.has(ip)) return ip;
  }
  throw new SandboxError(`no free address left in ${cidr}${pool ? ` hosts ${first}-${last}` : ''} (${last - first + 1} sessions); give the agent a larger --subnet or --address-pool`);
}

/** A stable, locally administered MAC for a session, so it keeps it across restores. */
export function macFor(sessionId: string): string {
  const h = createHash('sha256').update(sessionId).digest();
  const bytes = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function netnsName(sessionId: string): string {
  return `hs-${sessionId}`;
}

export function netnsPath(sessionId: string): string {
  return netnsFile(netnsName(sessionId));
}

/** Where `ip netns` keeps the namespace named `name`. */
export function netnsFile(name: string): string {
  return `/run/netns/${name}`;
}

/** Host-side veth name: at most 15 characters. */
export function hostVethName(sessionId: string): string {
  return `hsv${sessionId.slice(1)}`;
}

/**
 * Whether this network namespace has a link of that name: from
 * /proc/self/net/dev (the reader's own namespace), not an `ip` run, which
 * costs 3-10 ms on a restore's path.
 */
async function linkExists(name: string): Promise<boolean> {
  const dev = await readFile('/proc/self/net/dev', 'utf8');
  return dev.split('\n').some((line) => line.trimStart().startsWith(`${name}:`));
}

/** Runs `ip ARGS`; a failure is a SandboxError naming the command. */
export async function ip(args: string[]): Promise<void> {
  try {
    await run('ip', args, { timeoutMs: 10_000 });
  } catch (err) {
    throw new SandboxError(`network setup failed: ip ${args.join(' ')}: ${(err as Error).message}`, { cause: err });
  }
}

/** Creates the bridge with the subnet's gateway address, if it is not there yet. */
export async function ensureBridge(cfg: BridgeConfig): Promise<void> {
  const { gateway, prefixLength } = parseSubnet(cfg.subnet);
  const address = cfg.address ?? `${gateway}/${prefixLength}`;
  if (!(await linkExists(cfg.name))) {
    await ip(['link', 'add', cfg.name, 'type', 'bridge']);
  }
  // A bridge takes the lowest MAC of its ports unless given one: every session
  // veth added or removed could change it, and neighbours would then send the
  // bridge's own address to a MAC that is gone until they ARP again.
  await ip(['link', 'set', 'dev', cfg.name, 'address', macFor(`bridge ${cfg.name} ${address}`)]);
  const addrs = await run('ip', ['-o', '-4', 'addr', 'show', 'dev', cfg.name], { timeoutMs: 10_000 });
  if (!addrs.stdout.includes(` ${address}`)) await ip(['addr', 'add', address, 'dev', cfg.name]);
  await ip(['link', 'set', cfg.name, 'up']);
  if (cfg.uplink) await ip(['link', 'set', cfg.uplink, 'master', cfg.name, 'up']);
}

export async function removeBridge(name: string): Promise<void> {
  if (await linkExists(name)) await ip(['link', 'del', name]);
}

/**
 * A network namespace for a session: veth into the bridge, its address and
 * MAC, lo up, default route. `hostSide: 'down'` keeps the bridge's end down
 * (a restore into it brings it up once criu has restored the sockets: no
 * peer's packet meets the namespace before, to be answered with a reset).
 */
export async function createSessionNetwork(sessionId: string, net: SessionNetwork, bridge: BridgeConfig, opts: { hostSide?: 'up' | 'down' } = {}): Promise<void> {
  await removeSessionNetwork(sessionId, net);
  await makeNetwork(netnsName(sessionId), net, bridge, opts.hostSide ?? 'up');
}

/** A session's network on this node by its names: the namespace's and its veth's end on the bridge. */
export interface NetworkNames {
  netns: string;
  hostVeth: string;
}

/** The names a session's network has once it runs here. */
export function ownNetworkNames(sessionId: string, net: Pick<SessionNetwork, 'hostVeth'>): NetworkNames {
  return { netns: netnsName(sessionId), hostVeth: net.hostVeth };
}

/**
 * The names a moved-in session's network is made under while the move
 * streams, before the source has frozen it: on test hosts, which share
 * /run/netns, the namespace's own name is still the source's, and on any
 * node an older copy's veth may still be going (a session moved away and
 * straight back).
 */
export function stagingNetworkNames(sessionId: string): NetworkNames {
  return { netns: `hs-in-${sessionId}`, hostVeth: `hsw${sessionId.slice(1)}` };
}

/** Marks the staging networks one agent makes (its data directory's hash), so that it removes only its own. */
export function stagingOwner(dataDir: string): string {
  return createHash('sha256').update(dataDir).digest('hex').slice(0, 12);
}

/**
 * Removes the staging networks `owner` made whose veth is on this node (an
 * agent that stopped while a move streamed in left them): after a restart,
 * once the moves it recorded are settled. Returns the sessions' ids.
 */
export async function removeStagedNetworks(owner: string): Promise<string[]> {
  const ids = stagedSessions((await run('ip', ['-o', 'link', 'show'], { timeoutMs: 10_000 })).stdout, owner);
  for (const id of ids) await removeNamedNetwork(stagingNetworkNames(id));
  return ids;
}

/**
 * The sessions whose staging veth `ip -o link show` lists (stagingNetworkNames): those `owner` made, or
 * every one when no owner is given.
 */
export function stagedSessions(ipLinks: string, owner?: string): string[] {
  return [...ipLinks.matchAll(/^\d+: hsw([0-9a-f]{8})[@:](?:.*\\\s+alias (\S+))?/gm)].flatMap((m) =>
    owner === undefined || m[2] === `${STAGED_ALIAS}${owner}` ? [`s${m[1] as string}`] : [],
  );
}

const STAGED_ALIAS = 'hubshift-staged:';

/**
 * Makes a session's network ahead of its restore, its bridge end down,
 * under `names` (its own, or its staging names): 40-80 ms of `ip` runs that
 * then are not in the restore's critical path. A staging namespace a
 * killed agent left is replaced; anything else in the way fails it, and the
 * restore makes the network itself as before.
 */
export async function prepareSessionNetwork(names: NetworkNames, net: SessionNetwork, bridge: BridgeConfig, owner?: string): Promise<void> {
  // Its veth explicitly: one whose namespace lost its name goes only in the kernel's own time.
  if (existsSync(netnsFile(names.netns))) await removeNamedNetwork(names);
  await makeNetwork(names.netns, { ...net, hostVeth: names.hostVeth }, bridge, 'down', owner === undefined ? undefined : `${STAGED_ALIAS}${owner}`);
}

/**
 * Restored processes (`pid`, in a namespace made here) join the bridge: its
 * end comes up. If they run in the session's staging namespace, its names
 * become the session's own in the same ip run: the namespace's (taken from
 * the source's copy, on test hosts) and the veth's (an older copy's, still
 * going, deleted first).
 */
export async function claimSessionNetns(sessionId: string, net: Pick<SessionNetwork, 'hostVeth'>, pid: number): Promise<void> {
  const [own, staged] = [ownNetworkNames(sessionId, net), stagingNetworkNames(sessionId)];
  const isStaged = sameNetns(...(await Promise.all([netnsOf(pid), netnsAt(netnsFile(staged.netns))])));
  // An older copy's veth, apart: it may vanish by itself meanwhile (its namespace going), which is no failure.
  if (isStaged && (await linkExists(own.hostVeth))) await ipBatch(['-force'], [`link del ${own.hostVeth}`], { allowFailure: true });
  const rename = isStaged
    ? [...(existsSync(netnsFile(own.netns)) ? [`netns del ${own.netns}`] : []), `netns attach ${own.netns} ${pid}`, `netns del ${staged.netns}`, `link set dev ${staged.hostVeth} name ${own.hostVeth}`]
    : [];
  await ipBatch([], [...rename, `link set dev ${own.hostVeth} up`]);
}

async function makeNetwork(ns: string, net: SessionNetwork, bridge: BridgeConfig, hostSide: 'up' | 'down', alias?: string): Promise<void> {
  // Two ip runs, one each side, not eight: each costs 3-10 ms.
  const host = [
    `netns add ${ns}`,
    `link add ${net.hostVeth} type veth peer name eth0 netns ${ns}`,
    `link set ${net.hostVeth} master ${bridge.name}${hostSide === 'down' ? '' : ' up'}${alias === undefined ? '' : ` alias ${alias}`}`,
    // This node's neighbour entry for the address, if it has one, may hold the MAC of a session that had the address
    // before (removed, or moved away): the agent's first requests to this one, at its start, restore or a move's commit,
    // went to that MAC, and waited for the entry to fail (3-5 s; a commit timed out). Without an entry it asks afresh.
    // (A session's own first packets do not always replace an entry: not within the kernel's lock time of its last
    // update, and not one still being confirmed.)
    `neigh flush to ${net.ip} dev ${bridge.name}`,
  ];
  const inside = ['link set eth0 address ' + net.mac, `addr add ${net.ip}/${net.prefixLength} dev eth0`, 'link set eth0 up', 'link set lo up', `route add default via ${net.gateway}`];
  await ipBatch([], host);
  await ipBatch(['-n', ns], inside);
}

/** Runs `ip GLOBAL -batch` over commands; a failure is a SandboxError naming them, unless `allowFailure`. */
async function ipBatch(global: string[], commands: string[], opts: { allowFailure?: boolean } = {}): Promise<void> {
  try {
    await run('ip', [...global, '-batch', '-'], { input: `${commands.join('\n')}\n`, timeoutMs: 10_000, allowFailure: opts.allowFailure });
  } catch (err) {
    throw new SandboxError(`network setup failed: ip ${[...global, '-batch'].join(' ')} (${commands.join('; ')}): ${(err as Error).message}`, { cause: err });
  }
}

/** Removes the namespace's name and the host side of the veth; safe when either is gone. */
export async function removeSessionNetwork(sessionId: string, net: Pick<SessionNetwork, 'hostVeth'>): Promise<void> {
  await removeNamedNetwork(ownNetworkNames(sessionId, net));
}

/** removeSessionNetwork for a network under other names (a staging one). */
export async function removeNamedNetwork(names: NetworkNames): Promise<void> {
  const named = existsSync(netnsFile(names.netns));
  // Nothing to remove (a session made or moved in afresh): no ip run at all.
  if (!named && !(await linkExists(names.hostVeth))) return;
  // One ip for both, -force going on past what is already gone (the veth goes with a namespace whose
  // processes are gone): every ip started costs 5-10 ms, and a checkpoint waits for this one.
  await ipBatch(['-force'], [...(named ? [`netns del ${names.netns}`] : []), `link del ${names.hostVeth}`], { allowFailure: true });
}

/**
 * Drops the session's namespace name, if there is one, and nothing else: the
 * namespace goes once no process is in it, its veth with it, in the kernel's
 * own time (deleting a veth here waits 10-20 ms for the network's grace
 * period; a restore clears one still there, removeSessionNetwork).
 */
export async function dropNetnsName(sessionId: string): Promise<void> {
  if (existsSync(netnsPath(sessionId))) await run('ip', ['netns', 'del', netnsName(sessionId)], { allowFailure: true, timeoutMs: 10_000 });
}

/** A network namespace's identity (device and inode), as `ip netns identify` compares them. */
export interface NetnsId {
  dev: number;
  ino: number;
}

/** The identity of process `pid`'s network namespace; null when the process is gone. */
export async function netnsOf(pid: number): Promise<NetnsId | null> {
  return netnsAt(`/proc/${pid}/ns/net`);
}

/** The identity of the network namespace a file stands for (/proc/PID/ns/net, a name under /run/netns); null when it is gone. */
async function netnsAt(path: string): Promise<NetnsId | null> {
  const st = await stat(path).catch(() => null);
  return st ? { dev: st.dev, ino: st.ino } : null;
}

/** Whether two identities are of one namespace (false when either is unknown). */
function sameNetns(a: NetnsId | null, b: NetnsId | null): boolean {
  return a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
}

/**
 * After a session has moved away and its processes here are gone: drops its
 * namespace name if the name still pins the namespace it had here (`was`),
 * which then goes, and its veth with it. On test hosts, which share
 * /run/netns, the target's copy has taken the name by then: left alone.
 * Only where the namespace outlived the target's (a copy kept frozen or
 * stopped until the target ran): the kernel reuses a dead namespace's
 * inode, so one that died first may share it with the target's.
 */
export async function dropMovedNetns(sessionId: string, was: NetnsId | null): Promise<void> {
  if (was === null) return;
  if (!sameNetns(await netnsAt(netnsPath(sessionId)), was)) return;
  await dropNetnsName(sessionId);
}

/**
 * After a move whose copy here criu killed (the streamed stop-and-copy):
 * drops the session's namespace name, its veth with it, if no process is
 * in the namespace it names. On a host of its own that is this session's
 * dead namespace, pinned by the name with its address and criu's lock
 * rules, which would stay until the session came back; on test hosts,
 * which share /run/netns, the name is the target's now, and its running
 * copy is in it. (The inode cannot tell them apart: the dead namespace's
 * may have been reused for the target's.) Returns whether it dropped it.
 */
export async function dropUnusedSessionNetns(sessionId: string, net: Pick<SessionNetwork, 'hostVeth'>): Promise<boolean> {
  const named = await netnsAt(netnsPath(sessionId));
  if (!named || (await anyProcessIn(named))) return false;
  await removeSessionNetwork(sessionId, net);
  return true;
}

/** Whether any process of this machine is in the network namespace `ns`. */
async function anyProcessIn(ns: NetnsId): Promise<boolean> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n));
  const found = await Promise.all(pids.map((p) => netnsOf(Number(p))));
  return found.some((f) => sameNetns(f, ns));
}

/** After a restore criu made a new namespace: give it the session's name again. */
export async function attachSessionNetns(sessionId: string, pid: number): Promise<void> {
  await dropNetnsName(sessionId);
  await ip(['netns', 'attach', netnsName(sessionId), String(pid)]);
}

/** Where an announcement goes out from: a process's network namespace, or a namespace's file (a named one's, /run/netns/NAME). */
export type AnnounceFrom = number | { netnsFile: string };

const netnsOfAnnounce = (from: AnnounceFrom): string => (typeof from === 'number' ? `/proc/${from}/ns/net` : from.netnsFile);

/**
 * One packet from inside the restored namespace to its gateway, so the bridge
 * learns where the session's MAC is now (it may have moved to another port).
 */
export async function announce(from: AnnounceFrom, gateway: string, dev = 'eth0', port = ANNOUNCE_PORT): Promise<void> {
  await run('nsenter', [`--net=${netnsOfAnnounce(from)}`, '/bin/bash', '-c', `${FLUSH_UNANSWERED}; ${SEND_ANNOUNCEMENT}`, 'announce', gateway, dev, String(port)], { allowFailure: true, timeoutMs: 5_000 });
}

// Unanswered neighbour entries first: the restored sockets' first packets (ACKs as criu ends their repair) asked
// for the gateway while the bridge's end was still down; the entry then waits 1 s to ask again, and holds every
// packet to the gateway, this one and the replies to a client connected through it (a kept websocket's first
// execute after a move waited the full second). bash's /dev/udp: 2 ms on an idle node where a python run took 16 ms.
const NEIGH_FLUSH = 'neigh flush dev "$2" nud incomplete nud failed';
const FLUSH_UNANSWERED = `ip ${NEIGH_FLUSH} 2>/dev/null`;
const SEND_ANNOUNCEMENT = 'printf hubshift > "/dev/udp/$1/$3"';
// The same flush by an `ip` already started and waiting for its command (ip -batch): 3-4 ms when fired, where
// starting ip then took ~10.
const FLUSH_READY = 'coproc FLUSH { exec ip -force -batch - 2>/dev/null; }';
const FLUSH_NOW = `echo ${NEIGH_FLUSH} >&"\${FLUSH[1]}"; eval "exec \${FLUSH[1]}>&-"; wait "$FLUSH_PID"`;
/** The discard port: nobody need listen. */
const ANNOUNCE_PORT = 9;

/** An announcement made ready ahead of the moment it must go out (prepareAnnounce). */
export interface PreparedAnnounce {
  /** Sends it now (or, were the ready process gone, as announce does). */
  fire(): Promise<void>;
  /** It never goes; the waiting process ends. */
  cancel(): void;
}

/**
 * An announcement ready ahead of the moment it must go out: a shell inside
 * the namespace waits on its stdin, and `fire` has it send the packet, a
 * millisecond where entering the namespace and starting the shell then
 * took 19-30 ms of a move's downtime. A moved-in session's (its link
 * already up, its sockets restored) flushes the unanswered neighbour
 * entries at once; a restore's, made ready before criu has restored the
 * sockets, whose first packets leave such entries behind, flushes them
 * when fired (`flushAtFire`). Anything but "go" on its stdin, or its end
 * (this agent gone), ends it silently.
 */
export async function prepareAnnounce(from: AnnounceFrom, gateway: string, dev = 'eth0', port = ANNOUNCE_PORT, opts: { flushAtFire?: boolean } = {}): Promise<PreparedAnnounce> {
  const wait = 'read -r go || exit 0; [ "$go" = go ] || exit 0';
  const script = opts.flushAtFire ? `${FLUSH_READY}; ${wait}; ${FLUSH_NOW}; ${SEND_ANNOUNCEMENT}` : `${FLUSH_UNANSWERED}; ${wait}; ${SEND_ANNOUNCEMENT}`;
  const ready = await startDetached('nsenter', [`--net=${netnsOfAnnounce(from)}`, '/bin/bash', '-c', script, 'announce', gateway, dev, String(port)], { inputLater: true }).catch(() => null);
  let ended = ready === null;
  void ready?.exited.then(() => (ended = true));
  let used = false;
  return {
    async fire() {
      if (used) return;
      used = true;
      if (ready === null || ended) return announce(from, gateway, dev, port);
      ready.end('go\n');
      const timer = setTimeout(() => killQuietly(ready.pid, 'SIGKILL'), 5_000);
      await ready.exited;
      clearTimeout(timer);
    },
    cancel() {
      if (used) return;
      used = true;
      ready?.end('');
    },
  };
}

/** Takes a session's host-side veth down or up (post-copy: the frozen source must not answer for the address the target now has). */
export async function setHostVeth(net: Pick<SessionNetwork, 'hostVeth'>, state: 'up' | 'down'): Promise<void> {
  await ip(['link', 'set', 'dev', net.hostVeth, state]);
}

/** The address this node's kernel would use to reach `host` (an IPv4 address or a name): where a peer reaches this node back. */
export async function localAddressToward(host: string): Promise<string> {
  const address = await ipv4Of(host);
  const r = await run('ip', ['-4', '-o', 'route', 'get', address], { timeoutMs: 10_000 });
  const src = /\bsrc (\d{1,3}(?:\.\d{1,3}){3})\b/.exec(r.stdout)?.[1];
  if (!src) throw new SandboxError(`no route from this node to ${host} (${address}): 'ip route get' said ${JSON.stringify(r.stdout.trim())}`);
  return src;
}

/** The IPv4 address `host` names (itself, if it is one). */
export async function ipv4Of(host: string): Promise<string> {
  return (await lookup(host === 'localhost' ? '127.0.0.1' : host, { family: 4 })).address;
}

/** Whether `address` is one of this network namespace's own (its route is `local`): a peer on the same node and namespace. */
export async function isOwnAddress(address: string): Promise<boolean> {
  const r = await run('ip', ['-4', '-o', 'route', 'get', address], { timeoutMs: 10_000 });
  return /^local\s/.test(r.stdout.trim());
}

/** A TCP port free on `address` now (the kernel's pick); a process that binds it later may still lose a race for it. */
export async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, address, () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Bytes received so far on the connection to `peer` (a post-copy target's lazy-pages daemon, from the page server). */
export function bytesReceivedFrom(peer: { address: string; port: number }): Promise<number | null> {
  return tcpBytes('dst', peer, 'bytes_received');
}
