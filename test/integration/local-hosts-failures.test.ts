import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/agent-client.js';
import { findStoppedCopy } from '../../src/agent/stopped-copies.js';
import { netnsPath } from '../../src/agent/network.js';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { LocalProvider, localHostSpecs } from '../../src/cloud/local-provider.js';
import type { HostRecord } from '../../src/core/cloud.js';
import { run, sleep, waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { hostIptables } from '../helpers/host-iptables.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { expectOnlyCopy } from '../helpers/session-processes.js';
import { killAtPostDump, killAtPostRestore } from '../helpers/action-script.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { removeLeftSessions } from '../helpers/left-sessions.js';

/** How long the action script holds criu after killing a source agent inside its dump. */
const CRIU_LINGERS_SECONDS = 4;

/** Stop-and-copy moves between local test hosts, and failures in their middle (post-copy's: agent-post-copy). */
describe('a stop-and-copy move between local test hosts (memory pushed criu to criu), and one that fails midway', () => {
  let stateDir: string;
  let provider: LocalProvider;
  let hosts: HostRecord[];
  let clients: AgentClient[];
  let killFile: string;
  let killInDumpFile: string;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'hubshift-local-fail-'));
    // The operator's action script: kills the process named in the file `kill` (an agent) at a restore's post-restore
    // stage, inside criu restore with the tasks all there, while that file exists.
    killFile = join(stateDir, 'kill');
    // And kills the one named in `kill-in-dump` at a dump's post-dump stage, holding criu after it.
    killInDumpFile = join(stateDir, 'kill-in-dump');
    const criuActionScript = join(stateDir, 'kill-at-post-restore.sh');
    await writeFile(criuActionScript, `#!/bin/sh\n${killAtPostRestore(killFile)}${killAtPostDump(killInDumpFile, CRIU_LINGERS_SECONDS)}exit 0\n`, { mode: 0o755 });
    provider = new LocalProvider({ stateDir, bridge: 'hslf0', subnet: '10.252.0.0/16', incomingTimeoutSeconds: 4, moveIdleTimeoutSeconds: 3, criuActionScript, logLevel: 'warn' });
    hosts = await provider.create(localHostSpecs(3, 0));
    clients = await Promise.all(hosts.map(async (h) => new AgentClient(h.agentUrl, (await readFile(h.tokenFile, 'utf8')).trim())));
  });

  afterAll(async () => {
    await provider?.removeAll();
    await rm(stateDir, { recursive: true, force: true });
  });

  // A test that failed midway leaves its session wherever it got to: not the next test's problem.
  afterEach(async () => {
    await removeLeftSessions(clients ?? []);
  });

  it("should move a session with criu pushing its memory to the target's page server, and keep its websocket", async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pus');
    const k = await kernelWithState(s.url, s.token, 64);
    const sourcePid = (await a.getSession(s.id)).pid;
    const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: (await readFile(hosts[1]!.tokenFile, 'utf8')).trim() }, 'stop-and-copy');
    expect(r).toMatchObject({ id: s.id, url: s.url, mode: 'stop-and-copy' });
    expect(r.bytes).toBeGreaterThan(64 * 2 ** 20);
    // The memory went criu to criu: the target's page server left its log.
    expect((await readdir(join(hosts[1]!.dataDir, 'logs'))).some((n) => n.startsWith(`pages-${s.id}-`))).toBe(true);
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    // The server's log as criu recorded it went with the images: the target put it in place and kept the one it
    // found beside it. (The hosts share this machine's files, so a restore without it would not fail here.)
    expect((await stat(join(hosts[0]!.dataDir, 'sessions', s.id, 'server.log.before-restore'))).isFile()).toBe(true);
    // The stopped copy on the source was killed once the target answered.
    expect(sourcePid).not.toBeNull();
    expect(await isAlive(sourcePid as number)).toBe(false);
    expect(await a.findSession(s.id)).toBeNull();
    expect(await findStoppedCopy(hosts[0]!.dataDir, s.id)).toBeNull();
    // Test hosts share /run/netns: the name is the target's copy's now, and the source left it alone.
    expect(existsSync(netnsPath(s.id))).toBe(true);
    await b.removeSession(s.id);
  });

  it('should resume the session on the source, unlocked, and leave no copy on the target, when the source agent is killed inside the dump and criu outlives it', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('kid');
    const k = await kernelWithState(s.url, s.token, 32);
    await writeFile(killInDumpFile, String((await provider.hosts())[0]!.agentPid));
    try {
      await expect(a.move(s.id, { url: hosts[1]!.agentUrl, token: (await readFile(hosts[1]!.tokenFile, 'utf8')).trim() }, 'stop-and-copy')).rejects.toThrow();
    } finally {
      await rm(killInDumpFile, { force: true });
    }
    // criu still holds the session (frozen, locked) when the next agent starts.
    await provider.restartAgent(hosts[0]!.name);
    expect(await a.getSession(s.id)).toMatchObject({ state: 'running', pid: s.pid });
    // Past criu's linger: a criu left running would by then have left the session stopped (--leave-stopped).
    await sleep(CRIU_LINGERS_SECONDS * 1000);
    const state = await Promise.race([askState(k.channel), sleep(15_000).then(() => 'no answer in 15 s')]);
    expect(state).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    expect(await hasLockRules(netnsPath(s.id))).toBe(false);
    // The target never had the images: it drops what criu pushed to it.
    await waitFor('the target to have no copy', async () => ((await b.findSession(s.id)) === null ? true : undefined), { timeoutMs: 20_000, intervalMs: 200 });
    expect(await findStoppedCopy(hosts[0]!.dataDir, s.id)).toBeNull();
    expect((await readdir(join(hosts[0]!.dataDir, 'work'))).filter((n) => n.startsWith('m-'))).toEqual([]);
    await a.removeSession(s.id);
  });

  it('should resume the session on the source when the link is cut in the middle of the stream', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('lin');
    const k = await kernelWithState(s.url, s.token, 256);
    k.channel.close();
    const target = hosts[1]!;
    const rootVeth = `hslf0u1`;
    // The link to the target slowed to 50 MB/s, so that the cut lands while criu pushes (at full speed the
    // 256 MiB could all arrive between the progress seen and the cut).
    await run('tc', ['qdisc', 'add', 'dev', rootVeth, 'root', 'tbf', 'rate', '400mbit', 'burst', '256kb', 'latency', '100ms']);
    const moving = a.move(s.id, { url: target.agentUrl, token: (await readFile(target.tokenFile, 'utf8')).trim() }, 'stop-and-copy').then(
      () => null,
      (err: unknown) => err as Error,
    );
    try {
      // criu pushes the memory to the target while it dumps: cut once the target has acknowledged 64 MiB.
      await waitFor('the source to be sending', async () => {
        const p = await a.progress(s.id).catch(() => null);
        return (p?.step === 'dumping' && (p.doneBytes ?? 0) > 64 << 20) || p?.step === 'sending' ? true : undefined;
      }, { timeoutMs: 60_000, intervalMs: 2 });
      await run('ip', ['link', 'set', rootVeth, 'down']);
      const failure = await moving;
      // The source's watch saw the acknowledged bytes stop and reset the connection; criu then resumed the session.
      expect(failure?.message).toMatch(/pushing its memory: no page reached the target's page server/);
      expect(failure?.message).toMatch(/runs here again/);
    } finally {
      await run('ip', ['link', 'set', rootVeth, 'up']);
      await run('tc', ['qdisc', 'del', 'dev', rootVeth, 'root'], { allowFailure: true });
    }
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    // The target never restored it, and let go of the stalled stream.
    await waitFor('the target to answer again', async () => ((await b.health().then(() => true, () => false)) ? true : undefined), { timeoutMs: 20_000, intervalMs: 200 });
    expect(await b.findSession(s.id)).toBeNull();
    await a.removeSession(s.id);
  });

  it('should count the move done, leaving one copy, when the answer to its commit is lost and the target stays silent a while', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('cml');
    const k = await kernelWithState(s.url, s.token, 64);
    const sourcePid = s.pid as number;
    const target = hosts[1]!;
    const { hostname, port } = new URL(target.agentUrl);
    // In the source host: the answers to the commit, and to the aborts that follow, never arrive (a reset goes back to the target instead).
    const toTarget = ['-p', 'tcp', '-d', hostname, '--dport', port];
    const rules = [
      ['OUTPUT', ...toTarget, '-m', 'string', '--algo', 'bm', '--string', '/commit', '-j', 'CONNMARK', '--set-mark', '0x77'],
      ['OUTPUT', ...toTarget, '-m', 'string', '--algo', 'bm', '--string', 'DELETE /v1/incoming/', '-j', 'CONNMARK', '--set-mark', '0x77'],
      ['INPUT', '-p', 'tcp', '-s', hostname, '--sport', port, '-m', 'connmark', '--mark', '0x77', '-j', 'REJECT', '--reject-with', 'tcp-reset'],
    ];
    for (const r of rules) await hostIptables(hosts[0]!, ['-A', ...r]);
    let blocked = true;
    const unblock = async (): Promise<void> => {
      if (!blocked) return;
      blocked = false;
      for (const r of rules) await hostIptables(hosts[0]!, ['-D', ...r]);
    };
    try {
      const moving = a.move(s.id, { url: target.agentUrl, token: (await readFile(target.tokenFile, 'utf8')).trim() }, 'stop-and-copy').then(
        () => null,
        (err: unknown) => err as Error,
      );
      // The commit reached the target, which runs the session; the source heard nothing. It hears the target again
      // 5 s later: after its commit timed out (4 s) and its first abort went unanswered, before the target's commit
      // timeout has passed since (4 s + 2 s), when a source that stopped asking would have resumed its own copy.
      await waitFor('the target to run the session', async () => ((await b.findSession(s.id))?.state === 'running' ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
      await sleep(5_000);
      await unblock();
      const failure = await moving;
      expect(failure?.message).toMatch(/was committed there, but this agent did not hear it in time/);
    } finally {
      await unblock();
    }
    expect(await isAlive(sourcePid)).toBe(false);
    expect(await a.findSession(s.id)).toBeNull();
    expect(await findStoppedCopy(hosts[0]!.dataDir, s.id)).toBeNull();
    expect((await b.getSession(s.id)).state).toBe('running');
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await b.removeSession(s.id);
  });

  it('should keep the session safe in the store when the source host is removed after the freeze', async () => {
    // From host-3 to host-1: the other tests need host-1 and host-2.
    const [b, , a] = clients as [AgentClient, AgentClient, AgentClient];
    const s = await a.startSession('max');
    const k = await kernelWithState(s.url, s.token, 32);
    k.channel.close();
    const sourcePid = (await a.getSession(s.id)).pid as number;
    const moving = a.move(s.id, { url: hosts[0]!.agentUrl, token: (await readFile(hosts[0]!.tokenFile, 'utf8')).trim() }, 'stop-and-copy').catch(() => null);
    // The target is restoring the frozen session: the source host goes, so no commit will ever come.
    await waitFor('the target to be restoring the session', async () => ((await b.progress(s.id).catch(() => null))?.operation === 'move in' ? true : undefined), { timeoutMs: 60_000, intervalMs: 2 });
    killQuietly(hosts[2]!.agentPid!, 'SIGKILL');
    await run('ip', ['netns', 'del', `hsh-${hosts[2]!.name}`]);
    await moving;
    // After the commit timeout the target's verified copy is a checkpoint in the store, never lost.
    const checkpoint = await waitFor(
      'the session to be kept in the store',
      async () => {
        for (const c of await b.listCheckpoints()) if ((await b.manifest(c)).sessionId === s.id) return c;
        return undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    // Listed there as checkpointed, so a scheduler learns where it is once the source has gone quiet.
    expect(await b.findSession(s.id)).toMatchObject({ state: 'checkpointed', lastCheckpoint: checkpoint });
    const back = await b.restore(checkpoint);
    const ch = await KernelChannel.connect(back.url, back.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    await b.removeSession(s.id);
    // The source's stopped copy (its agent gone) ends with its host, by the pid its record holds.
    expect(await isAlive(sourcePid)).toBe(true);
    await provider.removeHost(hosts[2]!.name);
    await waitFor('the stopped copy to be gone', async () => ((await isAlive(sourcePid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 50 });
  });

  it('should resume the session on the source, and leave no copy on the target, when the target agent is killed while restoring', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('kay');
    const k = await kernelWithState(s.url, s.token, 32);
    const moving = a.move(s.id, { url: hosts[1]!.agentUrl, token: (await readFile(hosts[1]!.tokenFile, 'utf8')).trim() }, 'stop-and-copy').then(
      () => null,
      (err: unknown) => err as Error,
    );
    await waitFor('the target to be restoring the session', async () => ((await b.progress(s.id).catch(() => null))?.operation === 'move in' ? true : undefined), { timeoutMs: 60_000, intervalMs: 5 });
    killQuietly(hosts[1]!.agentPid!, 'SIGKILL');
    const failure = await moving;
    expect(failure?.message).toMatch(/runs here again/);
    // Exactly one copy: the source's, answering on the websocket it had before.
    expect((await a.getSession(s.id)).state).toBe('running');
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    // The target's restored copy (if criu got that far) goes, by its guard or the agent back, which keeps the verified image
    // it had in the store, as when no commit comes: the session is never listed running there.
    await provider.restartAgent(hosts[1]!.name);
    expect((await b.findSession(s.id))?.state ?? 'gone').toMatch(/^(gone|checkpointed)$/);
    await expectOnlyCopy(s.id, (await a.getSession(s.id)).pid!);
    await a.removeSession(s.id);
  });

  it("should resume the session on the source, and keep the target's verified image in its store, when the target agent dies inside criu restore and comes back", async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('kir');
    const k = await kernelWithState(s.url, s.token, 32);
    const targetAgent = (await provider.hosts())[1]!.agentPid!;
    await writeFile(killFile, String(targetAgent));
    const moving = a.move(s.id, { url: hosts[1]!.agentUrl, token: (await readFile(hosts[1]!.tokenFile, 'utf8')).trim() }, 'stop-and-copy').then(
      () => null,
      (err: unknown) => err as Error,
    );
    try {
      await waitFor('the target agent to be killed inside criu restore', async () => ((await isAlive(targetAgent)) ? undefined : true), { timeoutMs: 60_000, intervalMs: 20 });
    } finally {
      await rm(killFile, { force: true });
    }
    // criu finished the restore without its agent: a stopped copy that only the pid file it wrote names. The agent,
    // back while the source still asks it to abort, kills that copy and keeps the verified image, as when no commit comes.
    await provider.restartAgent(hosts[1]!.name);
    const failure = await moving;
    expect(failure?.message).toMatch(/runs here again/);
    const here = await a.getSession(s.id);
    expect(here.state).toBe('running');
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    const kept = await b.getSession(s.id);
    expect(kept).toMatchObject({ state: 'checkpointed', pid: null });
    expect(kept.lastCheckpoint).toBeTruthy();
    expect(await readdir(join(hosts[1]!.dataDir, 'incoming')).catch(() => [])).toEqual([]);
    await expectOnlyCopy(s.id, here.pid!);
    await b.removeSession(s.id);
    await a.removeSession(s.id);
  });

  it('should end, with a removed host, what its agent left running in its namespace', async () => {
    // A stand-in for a lazy-pages daemon whose source vanished: it would wait on its dead connection for ever.
    const left = spawn('nsenter', [`--net=/run/netns/hsh-${hosts[1]!.name}`, 'sleep', '600'], { detached: true, stdio: 'ignore' });
    left.unref();
    const pid = left.pid!;
    try {
      await waitFor('it to run in the host namespace', async () => ((await readlink(`/proc/${pid}/ns/net`).catch(() => '')) !== (await readlink('/proc/self/ns/net')) ? true : undefined), { timeoutMs: 5_000, intervalMs: 20 });
      await provider.removeHost(hosts[1]!.name);
      await waitFor('it to be gone', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 50 });
    } finally {
      killQuietly(pid, 'SIGKILL');
    }
  });
});
