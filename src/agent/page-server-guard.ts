import type { Logger } from 'pino';
import type { PageServerAt } from '../core/checkpoint.js';
import { errorMessage } from '../core/errors.js';
import { run } from '../util/exec.js';

/**
 * criu's page servers have no authentication (its --tls is not wired in):
 * the target's in a stop-and-copy move, the source's in post-copy, which
 * serves a frozen session's memory to whoever connects first. While a page
 * server runs, this node admits to its port only the peer host it serves;
 * a connection from any other address is reset. One nftables table per port, in the agent's network namespace,
 * removed when the page server ends (and at the agent's start, for one a
 * dead agent left). It does not tell apart the peer host's own processes,
 * nor a session on it whose traffic leaves with the host's address.
 */
const TABLE_PREFIX = 'hubshift_ps_';

export interface PageServerGuard {
  /** Ends the guard; never throws. */
  remove(): Promise<void>;
}

const tableOf = (port: number): string => `${TABLE_PREFIX}${port}`;
/** A guard's table as `nft list tables` names it. */
const GUARD_TABLE = new RegExp(`^table inet (${TABLE_PREFIX}\\d+)$`);

async function nft(args: string[], input?: string): Promise<void> {
  await run('nft', args, { input, timeoutMs: 10_000 });
}

/**
 * Admits to `at` only connections from `peer` (an IPv4 address). Where
 * nftables cannot be used the page server stays open to all, with a warning:
 * the move still works, as before the guard.
 */
export async function guardPageServer(at: PageServerAt, peer: string, log: Logger): Promise<PageServerGuard> {
  const table = tableOf(at.port);
  // Declared, deleted and made again in one transaction: a table of the same name is a dead agent's (the port
  // was free just now), replaced.
  const rules = `table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    ip daddr ${at.address} tcp dport ${at.port} ip saddr != ${peer} reject with tcp reset
  }
}
`;
  try {
    await nft(['-f', '-'], rules);
  } catch (err) {
    log.warn({ pageServer: at, peer, err: errorMessage(err) }, 'the page server could not be limited to its peer; it accepts any address');
    return { remove: async () => undefined };
  }
  let removed: Promise<void> | undefined;
  return {
    remove: () => (removed ??= nft(['delete', 'table', 'inet', table]).catch((err: unknown) => log.warn({ pageServer: at, err: errorMessage(err) }, 'removing a page server guard failed'))),
  };
}

/** The guards a dead agent left in this network namespace: removed at the agent's start. */
export async function removeStaleGuards(): Promise<number> {
  const r = await run('nft', ['list', 'tables'], { allowFailure: true, timeoutMs: 10_000 });
  if (r.code !== 0) return 0;
  const stale = r.stdout
    .split('\n')
    .map((l) => GUARD_TABLE.exec(l.trim())?.[1])
    .filter((t): t is string => t !== undefined);
  for (const t of stale) await nft(['delete', 'table', 'inet', t]).catch(() => undefined);
  return stale.length;
}
