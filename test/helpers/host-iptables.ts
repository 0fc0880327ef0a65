import type { HostRecord } from '../../src/core/cloud.js';
import { run } from '../../src/util/exec.js';

/** Runs iptables inside a local test host's network namespace. */
export async function hostIptables(host: HostRecord, args: string[]): Promise<void> {
  await run('nsenter', [`--net=/run/netns/hsh-${host.name}`, 'iptables', '-w', ...args], { timeoutMs: 10_000 });
}
