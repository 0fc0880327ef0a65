import { run } from '../util/exec.js';

/**
 * criu locks a dumped network namespace with an iptables chain named CRIU,
 * hooked from INPUT and OUTPUT, inside that namespace. A criu that dies in the
 * middle leaves the chain behind and the session unreachable. These find and
 * remove it; `netns` is a path like /proc/PID/ns/net or /run/netns/NAME.
 */
const TOOLS = ['iptables', 'ip6tables'] as const;

export async function hasLockRules(netns: string): Promise<boolean> {
  for (const tool of TOOLS) {
    const r = await run('nsenter', [`--net=${netns}`, tool, '-w', '-S'], { allowFailure: true, timeoutMs: 10_000 });
    if (/^-N CRIU$/m.test(r.stdout)) return true;
  }
  return false;
}

export async function removeLockRules(netns: string): Promise<boolean> {
  let removed = false;
  for (const tool of TOOLS) {
    const listed = await run('nsenter', [`--net=${netns}`, tool, '-w', '-S'], { allowFailure: true, timeoutMs: 10_000 });
    if (!/^-N CRIU$/m.test(listed.stdout)) continue;
    removed = true;
    for (const chain of ['INPUT', 'OUTPUT']) {
      // A jump may have been added more than once; delete until none is left.
      for (let i = 0; i < 8; i++) {
        const r = await run('nsenter', [`--net=${netns}`, tool, '-w', '-D', chain, '-j', 'CRIU'], { allowFailure: true, timeoutMs: 10_000 });
        if (r.code !== 0) break;
      }
    }
    await run('nsenter', [`--net=${netns}`, tool, '-w', '-F', 'CRIU'], { allowFailure: true, timeoutMs: 10_000 });
    await run('nsenter', [`--net=${netns}`, tool, '-w', '-X', 'CRIU'], { allowFailure: true, timeoutMs: 10_000 });
  }
  return removed;
}
