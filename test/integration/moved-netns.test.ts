import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { dropUnusedSessionNetns, hostVethName, netnsName, netnsPath } from '../../src/agent/network.js';
import { run, waitFor } from '../../src/util/exec.js';

const linkExists = async (name: string): Promise<boolean> => (await run('ip', ['link', 'show', 'dev', name], { allowFailure: true })).code === 0;

describe("a moved session's namespace name, once criu has killed its copy here", () => {
  it('should be dropped with its veth when no process is in its namespace, and kept while one is', async () => {
    const id = `s${randomBytes(4).toString('hex')}`;
    const veth = hostVethName(id);
    let inside: ChildProcess | undefined;
    try {
      // What a killed session leaves on a host of its own: a namespace pinned by its name, with its veth.
      await run('ip', ['netns', 'add', netnsName(id)]);
      await run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netnsName(id)]);
      expect(await dropUnusedSessionNetns(id, { hostVeth: veth })).toBe(true);
      expect(existsSync(netnsPath(id))).toBe(false);
      expect(await linkExists(veth)).toBe(false);

      // Test hosts share /run/netns: there the name is the target's by now, and its running copy is in it.
      await run('ip', ['netns', 'add', netnsName(id)]);
      await run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netnsName(id)]);
      inside = spawn('ip', ['netns', 'exec', netnsName(id), 'sleep', '60'], { stdio: 'ignore' });
      const ns = await stat(netnsPath(id));
      await waitFor('the process to be in the namespace', async () => ((await stat(`/proc/${inside!.pid}/ns/net`).catch(() => null))?.ino === ns.ino ? true : undefined), { timeoutMs: 5_000, intervalMs: 20 });
      expect(await dropUnusedSessionNetns(id, { hostVeth: veth })).toBe(false);
      expect(existsSync(netnsPath(id))).toBe(true);
      expect(await linkExists(veth)).toBe(true);
      // No name at all: nothing to do.
      expect(await dropUnusedSessionNetns(`s${randomBytes(4).toString('hex')}`, { hostVeth: 'hsvnone' })).toBe(false);
    } finally {
      if (inside?.pid) process.kill(inside.pid, 'SIGKILL');
      await run('ip', ['netns', 'del', netnsName(id)], { allowFailure: true });
      await run('ip', ['link', 'del', veth], { allowFailure: true });
    }
  });
});
