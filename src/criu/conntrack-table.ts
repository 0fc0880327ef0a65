import { readFile, writeFile } from 'node:fs/promises';

export const CONNTRACK_BUCKETS_FILE = '/proc/sys/net/netfilter/nf_conntrack_buckets';
export const CONNTRACK_COUNT_FILE = '/proc/sys/net/netfilter/nf_conntrack_count';

/**
 * Buckets the agent shrinks the host's connection-tracking table to: 4 per
 * tracked connection at 4 096 connections, far more than a node's sessions
 * hold (and the kernel still tracks up to nf_conntrack_max, with longer
 * chains).
 */
export const DEFAULT_CONNTRACK_BUCKETS = 16_384;

export interface ConntrackFiles {
  buckets: string;
  count: string;
}

export type ConntrackShrink =
  | { done: 'shrunk'; before: number; after: number }
  | { done: 'left'; before: number; why: string }
  | { done: 'absent' };

async function readNumber(file: string): Promise<number | null> {
  const text = await readFile(file, 'utf8').catch(() => null);
  if (text === null) return null;
  const n = Number(text.trim());
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/**
 * Why: criu 4.2.1 dumps the connection-tracking table (its entries, then its
 * expectations) in every dump, even of a network namespace it leaves out of
 * the images, and throws the result away. Each is a netlink dump that walks
 * every bucket of the host-wide table, and the kernel sizes that table by
 * memory: 262 144 buckets on any 64-bit host with more than 4 GB. Here each
 * walk took 10 ms (strace: one sendmsg to its recvmsg), 20-26 ms of every
 * dump, a 256 MiB checkpoint's 0.32 s and post-copy's freeze alike; with
 * 16 384 buckets the namespace's part of the dump took 3-7 ms.
 *
 * Shrinks the table to `target` buckets when it is larger and holds fewer
 * than `target / 2` connections (a node that tracks more, a router, is left
 * as it is). Never grows it. Reports what it did; a table that cannot be
 * written is left, with the reason.
 */
export async function shrinkConntrackTable(target = DEFAULT_CONNTRACK_BUCKETS, files: ConntrackFiles = { buckets: CONNTRACK_BUCKETS_FILE, count: CONNTRACK_COUNT_FILE }): Promise<ConntrackShrink> {
  const before = await readNumber(files.buckets);
  if (before === null) return { done: 'absent' };
  if (before <= target) return { done: 'left', before, why: `it has ${before} buckets, no more than ${target}` };
  const count = await readNumber(files.count);
  if (count === null || count > target / 2) return { done: 'left', before, why: `it tracks ${count ?? 'an unknown number of'} connections` };
  try {
    await writeFile(files.buckets, String(target));
  } catch (err) {
    return { done: 'left', before, why: `${files.buckets} could not be written (${(err as Error).message}); run 'sysctl net.netfilter.nf_conntrack_buckets=${target}' as root` };
  }
  return { done: 'shrunk', before, after: (await readNumber(files.buckets)) ?? target };
}
