import { run } from './exec.js';

/** A local or remote TCP end. */
export interface TcpEnd {
  address: string;
  port: number;
}

/**
 * A TCP counter (`ss -ti`: bytes_received, bytes_acked) summed over this
 * namespace's established connections to (`dst`) or from (`src`) the
 * address and port, or null when there is none. Moves read their page
 * transfers' progress from them.
 */
export async function tcpBytes(end: 'dst' | 'src', at: TcpEnd, counter: 'bytes_received' | 'bytes_acked'): Promise<number | null> {
  const r = await run('ss', ['-tinH', 'state', 'established', end, `${at.address}:${at.port}`], { allowFailure: true, timeoutMs: 5_000 });
  const counts = [...r.stdout.matchAll(new RegExp(`\\b${counter}:(\\d+)`, 'g'))].map((m) => Number(m[1]));
  return counts.length === 0 ? null : counts.reduce((a, b) => a + b, 0);
}

/**
 * Resets this namespace's TCP connections to `peer` (`ss -K`, the kernel's
 * SOCK_DESTROY): the peer gets an RST, and a process blocked on them an
 * error at once, where a dead link would hold it for ever.
 */
export async function resetConnectionsTo(peer: TcpEnd): Promise<void> {
  await run('ss', ['-K', 'dst', `${peer.address}:${peer.port}`], { allowFailure: true, timeoutMs: 5_000 }).catch(() => undefined);
}
