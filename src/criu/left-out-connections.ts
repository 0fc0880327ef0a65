import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import type { TcpEnd } from '../util/tcp.js';
import { inNetns, letResetsThrough } from './network-lock.js';

/** A TCP connection seen from a dumped session's namespace: `local` is the session's end. */
export interface TcpConnection {
  family: 4 | 6;
  local: TcpEnd;
  remote: TcpEnd;
}

const ESTABLISHED = '01';

/** An address as /proc/net/tcp{,6} prints it: 32-bit words in hex, each in this machine's byte order. */
function procAddress(hex: string): { family: 4 | 6; address: string } | null {
  if (!/^(?:[0-9A-F]{8}|[0-9A-F]{32})$/i.test(hex)) return null;
  const bytes = Buffer.from(hex, 'hex');
  if (endianness() === 'LE') for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  if (bytes.length === 4) return { family: 4, address: [...bytes].join('.') };
  // An IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) is IPv4 on the wire.
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return { family: 4, address: [...bytes.subarray(12)].join('.') };
  const words = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  return { family: 6, address: words.join(':') };
}

function procEnd(field: string): ({ family: 4 | 6 } & TcpEnd) | null {
  const [hex, port] = field.split(':');
  const a = hex === undefined ? null : procAddress(hex);
  const p = port === undefined ? NaN : parseInt(port, 16);
  return a && Number.isInteger(p) ? { ...a, port: p } : null;
}

const isLoopback = (e: { family: 4 | 6; address: string }): boolean => (e.family === 4 ? e.address.startsWith('127.') : e.address === '0:0:0:0:0:0:0:1');

/**
 * The connections of a /proc/PID/net/tcp or tcp6 table that a dump left out
 * (criu's --skip-in-flight): established but never accepted by the session's
 * server, so with no socket file (inode 0), their request unread in a
 * listen queue. Those within the session itself (loopback, or its own
 * address at both ends) are not counted: both their ends went with the dump
 * or neither.
 */
export function leftOutConnections(table: string): TcpConnection[] {
  const found: TcpConnection[] = [];
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== ESTABLISHED || f[9] !== '0') continue;
    const local = procEnd(f[1] as string);
    const remote = procEnd(f[2] as string);
    if (!local || !remote || local.family !== remote.family || isLoopback(remote) || remote.address === local.address) continue;
    found.push({ family: local.family, local: { address: local.address, port: local.port }, remote: { address: remote.address, port: remote.port } });
  }
  return found;
}

/** What a dumped (frozen) process's network namespace holds of such connections, IPv4 and IPv6; none where the tables cannot be read. */
export async function leftOutConnectionsOf(pid: number): Promise<TcpConnection[]> {
  const tables = await Promise.all(['tcp', 'tcp6'].map((t) => readFile(`/proc/${pid}/net/${t}`, 'utf8').catch(() => '')));
  return tables.flatMap(leftOutConnections);
}

const ssEnd = (c: TcpConnection, e: TcpEnd): string => (c.family === 4 ? `${e.address}:${e.port}` : `[${e.address}]:${e.port}`);

/**
 * Resets the connections a dump left out of a session (leftOutConnections),
 * from its namespace while criu's lock still holds it: their clients get an
 * RST at once and may send again (their requests were never read, so
 * nothing is done twice). Without it each waits, its request unanswered,
 * until it next sends: its TCP keepalive, a minute for Node's fetch, or for
 * ever. Each is destroyed with `ss -K` (the kernel's SOCK_DESTROY, which
 * sends the RST); criu's lock lets those RSTs out and nothing else. Call
 * only for a dump that stops the session, while its processes are frozen.
 * Returns the connections reset; a failure to reset is thrown.
 */
export async function resetLeftOutConnections(pid: number): Promise<TcpConnection[]> {
  const conns = await leftOutConnectionsOf(pid);
  if (!conns.length) return conns;
  const netns = `/proc/${pid}/ns/net`;
  await letResetsThrough(netns, conns);
  for (const c of conns) {
    await inNetns(netns, 'ss', ['-K', '-tn', 'state', 'established', 'src', ssEnd(c, c.local), 'and', 'dst', ssEnd(c, c.remote)], { mustSucceed: true });
  }
  return conns;
}
