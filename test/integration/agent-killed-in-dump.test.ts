import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/agent-client.js';
import { netnsPath } from '../../src/agent/network.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { isAlive, processTree } from '../../src/util/proc.js';
import { askState, kernelWithState } from '../helpers/kernel.js';

const exec = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/hubshift.js');
const PORT = 7393;
const BRIDGE = 'hskd0';

/**
 * The agent (its own process, as in production) SIGKILLed from inside criu
 * dump, at its post-dump stage: every page written, the session frozen and
 * its network locked, nothing committed. ARCHITECTURE invariant 1: the
 * session must come back running, from where it was.
 */
/** `criuLingers`: the hook holds criu that many seconds after the kill, so that the next agent starts while criu still holds the session. */
async function killedInDump(criuLingers: number): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'hubshift-killed-in-dump-'));
  const dataDir = join(dir, 'data');
  const killFile = join(dir, 'agent.pid');
  const hook = join(dir, 'hook.sh');
  const hookPidFile = join(dir, 'hook.pid');
  await writeFile(hook, `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && [ -s '${killFile}' ] || exit 0\necho $$ > '${hookPidFile}'\nkill -9 "$(cat '${killFile}')"\nsleep ${criuLingers}\nexit 0\n`);
  await chmod(hook, 0o755);
  const startAgent = async (extra: string[]): Promise<ChildProcess> => {
    const child = spawn(process.execPath, [BIN, 'agent', '--port', String(PORT), '--data-dir', dataDir, '--token-file', join(dir, 'token'), '--bridge', BRIDGE, '--subnet', '10.238.0.0/24', ...extra], { stdio: 'ignore' });
    await waitFor('the agent to answer', async () => ((await fetch(`http://127.0.0.1:${PORT}/healthz`).then((r) => r.ok).catch(() => false)) ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    return child;
  };
  const agents: ChildProcess[] = [];
  let sessionPids: number[] = [];
  let sessionId = '';
  try {
    const first = await startAgent(['--criu-action-script', hook]);
    agents.push(first);
    const client = new AgentClient(`http://127.0.0.1:${PORT}`, (await readFile(join(dir, 'token'), 'utf8')).trim());
    const s = await client.startSession('kim');
    sessionId = s.id;
    const k = await kernelWithState(s.url, s.token, 32);
    sessionPids = await processTree(s.pid!);
    const firstGone = new Promise((resolve) => first.once('exit', resolve));
    await writeFile(killFile, String(first.pid));
    await expect(client.checkpoint(s.id)).rejects.toThrow(/did not answer/);
    await firstGone;

    agents.push(await startAgent([]));
    try {
      expect(await client.getSession(s.id)).toMatchObject({ state: 'running', pid: s.pid });
      // The same processes, running again, and reachable: the client's websocket never closed. (Checked
      // past the hook's linger: a criu left running would by then have left the session stopped.)
      await sleep(criuLingers * 1000);
      const state = await Promise.race([askState(k.channel), sleep(15_000).then(() => 'no answer in 15 s')]);
      expect(state).toEqual({ answer: '42', hash: k.hash });
      expect(await hasLockRules(netnsPath(s.id))).toBe(false);
      expect(await client.listCheckpoints()).toEqual([]);
      expect((await readdir(join(dataDir, 'work'))).filter((n) => /^c[0-9a-z]+$/.test(n))).toEqual([]);
    } finally {
      k.channel.close();
    }
    await client.removeSession(s.id);
  } finally {
    for (const a of agents) {
      if (a.exitCode === null && a.signalCode === null) {
        const gone = new Promise((resolve) => a.once('exit', resolve));
        a.kill('SIGTERM');
        await gone;
      }
    }
    // Had anything been left, this removes it: the session's processes and the hook by pid, then the names made for them.
    const hookPid = Number(await readFile(hookPidFile, 'utf8').catch(() => '0'));
    for (const pid of [...sessionPids, ...(hookPid ? [hookPid] : [])]) if (await isAlive(pid)) process.kill(pid, 'SIGKILL');
    if (sessionId) await exec('ip', ['netns', 'del', `hs-${sessionId}`]).catch(() => undefined);
    await exec('ip', ['link', 'del', BRIDGE]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

describe('an agent killed inside a checkpoint', () => {
  it('should leave the session to its successor, which resumes it, unlocks its network and removes the uncommitted images', async () => {
    await killedInDump(0);
  });

  it('should have its successor end the criu that outlived it before resuming the session', async () => {
    await killedInDump(4);
  });
});
