import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { hotPagesPath, readHotPages, type HotPages } from '../../src/agent/hot-pages.js';
import { UpstreamError } from '../../src/core/errors.js';
import { faultedPages } from '../../src/criu/lazy-faults.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { runHubshift } from '../helpers/control-plane.js';
import { bigFile, queuedRequest } from '../helpers/busy-server.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';
import { expectFrozenWithin } from '../helpers/move-result.js';

/** Fails criu's restore at its first stage while the flag file says "fail". */
const RESTORE_FAULT = (flag: string): string => `#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = "pre-restore" ] || exit 0
[ "$(cat '${flag}' 2>/dev/null)" = fail ] && exit 1
exit 0
`;

/**
 * Two agents on one bridge (disjoint address pools), as two hosts on one
 * segment: a session streams from one to the other without the store.
 */
describe('moving a session between agents (stop-and-copy, streamed)', () => {
  let a: TestAgent;
  let b: TestAgent;
  let dir: string;
  let flag: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-move-'));
    flag = join(dir, 'fault');
    await writeFile(`${flag}.sh`, RESTORE_FAULT(flag));
    await chmod(`${flag}.sh`, 0o755);
    const tag = randomBytes(2).toString('hex');
    const bridge = { name: `hsm${tag}`, subnet: `10.223.${parseInt(tag, 16) % 250}.0/24` };
    a = await startTestAgent({ bridge: { ...bridge, pool: { first: 2, last: 99 } } });
    b = await startTestAgent({ bridge: { ...bridge, pool: { first: 100, last: 199 } }, criuActionScript: `${flag}.sh` });
  });
  afterAll(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('should keep the IP, the kernel state and an open websocket, and leave the source with nothing', async () => {
    const s = await a.client.startSession('mo');
    const k = await kernelWithState(s.url, s.token, 64);
    const requestedAt = Date.now();
    const r = await a.client.move(s.id, { url: b.agent.url, token: b.token }, 'stop-and-copy');
    expect(r).toMatchObject({ id: s.id, url: s.url, mode: 'stop-and-copy', target: b.agent.url });
    expect(r.downtimeSeconds).toBeGreaterThan(0);
    expectFrozenWithin(r, requestedAt, Date.now());
    expect(r.bytes).toBeGreaterThan(64 * 2 ** 20);
    // The websocket opened before the move still answers: its TCP connection moved with the session.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    expect((await b.client.getSession(s.id)).state).toBe('running');
    expect(await a.client.findSession(s.id)).toBeNull();
    // The server's log as criu recorded it went with the images (streamed: criu's hook copied it at post-dump): the
    // target put it in place and kept the one it found beside it. (Both agents share this machine's files, so a
    // restore without it would not fail here.)
    expect((await stat(join(a.config.dataDir, 'sessions', s.id, 'server.log.before-restore'))).isFile()).toBe(true);
    // And back again.
    const back = await b.client.move(s.id, { url: a.agent.url, token: a.token }, 'stop-and-copy');
    expect(back.url).toBe(s.url);
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
  });

  it('should resume the session on the source when the target cannot restore it', async () => {
    const s = await a.client.startSession('nia');
    const k = await kernelWithState(s.url, s.token, 8);
    await writeFile(flag, 'fail');
    let failure: UpstreamError | undefined;
    try {
      await a.client.move(s.id, { url: b.agent.url, token: b.token }, 'stop-and-copy');
    } catch (err) {
      failure = err as UpstreamError;
    } finally {
      await writeFile(flag, '');
    }
    expect(failure?.message).toMatch(/runs here again/);
    expect(failure?.message).toMatch(/criu restore failed/);
    expect((await a.client.getSession(s.id)).state).toBe('running');
    expect(await b.client.findSession(s.id)).toBeNull();
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
  });

  it('should move from the command line and print the documented JSON', async () => {
    const s = (await a.client.listSessions())[0]!;
    await writeFile(join(dir, 'a.token'), a.token);
    await writeFile(join(dir, 'b.token'), b.token);
    const r = await runHubshift(['migrate', s.id, '--agent', a.agent.url, '--to', b.agent.url, '--token-file', join(dir, 'a.token'), '--target-token-file', join(dir, 'b.token'), '--mode', 'stop-and-copy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(out).sort()).toEqual(['downtimeSeconds', 'id', 'mode', 'seconds', 'url']);
    expect(out).toMatchObject({ id: s.id, url: s.url, mode: 'stop-and-copy' });
    expect((await b.client.getSession(s.id)).state).toBe('running');
    // Post-copy from the command line too (the setup probe found it works here).
    const back = await runHubshift(['migrate', s.id, '--agent', b.agent.url, '--to', a.agent.url, '--token-file', join(dir, 'b.token'), '--target-token-file', join(dir, 'a.token'), '--mode', 'post-copy', '--json']);
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout)).toMatchObject({ id: s.id, url: s.url, mode: 'post-copy' });
    expect((await a.client.getSession(s.id)).state).toBe('running');
  });

  it('should refuse post-copy, with the reason, when the target cannot do it', async () => {
    const s = (await a.client.listSessions())[0]!;
    // The target's agent says whether its criu passed the lazy-migration probe; this one says no.
    const original = b.agent.ctx.criu;
    b.agent.ctx.criu = { ...original, postCopy: { ok: false, reason: 'test: no lazy migration here' } };
    try {
      await expect(a.client.move(s.id, { url: b.agent.url, token: b.token }, 'post-copy')).rejects.toThrow(/post-copy is not available on the target/);
      // Auto mode then moves it stop-and-copy.
      expect((await a.client.move(s.id, { url: b.agent.url, token: b.token })).mode).toBe('stop-and-copy');
      await expect(b.client.move(s.id, { url: a.agent.url, token: a.token }, 'post-copy')).rejects.toThrow(/test: no lazy migration here/);
    } finally {
      b.agent.ctx.criu = original;
    }
    expect((await b.client.getSession(s.id)).state).toBe('running');
  });

  it('should move stop-and-copy, and refuse post-copy saying why, while a host has transparent huge pages "always"', async () => {
    const s = (await b.client.listSessions())[0]!;
    // As the kernel shows the setting; an operator may change it at any time, so each move reads it.
    const thp = join(dir, 'thp-enabled');
    await writeFile(thp, '[always] madvise never\n');
    const original = a.agent.ctx.config.transparentHugePagesFile;
    a.agent.ctx.config.transparentHugePagesFile = thp;
    try {
      expect((await a.client.health()).postCopy).toBe(false);
      await expect(b.client.move(s.id, { url: a.agent.url, token: a.token }, 'post-copy')).rejects.toThrow(/post-copy is not available on the target/);
      expect((await b.client.move(s.id, { url: a.agent.url, token: a.token })).mode).toBe('stop-and-copy');
      await expect(a.client.move(s.id, { url: b.agent.url, token: b.token }, 'post-copy')).rejects.toThrow(/transparent huge pages are "always"/);
      await writeFile(thp, 'always [madvise] never\n');
      expect((await a.client.health()).postCopy).toBe(true);
      expect((await a.client.move(s.id, { url: b.agent.url, token: b.token })).mode).toBe('post-copy');
    } finally {
      a.agent.ctx.config.transparentHugePagesFile = original;
    }
    expect((await b.client.getSession(s.id)).state).toBe('running');
  });

  it("should take along the pages the kernel faulted on after the last move, restore them eagerly on the target, and send them ahead in a post-copy move", async () => {
    const s = await a.client.startSession('hot');
    // Large enough that the daemon's background copy is still under way at the first execute.
    const k = await kernelWithState(s.url, s.token, 512);
    k.channel.close();
    const faulted: Map<number, number[]>[] = [];
    const recorded: HotPages[] = [];
    let writtenAt = 0;
    let postCopyBytes = 0;
    for (const [from, to, mode] of [
      [a, b, 'stop-and-copy'],
      [b, a, 'stop-and-copy'],
      [a, b, 'post-copy'],
    ] as const) {
      const r = await from.client.move(s.id, { url: to.agent.url, token: to.token }, mode);
      expect(r.mode).toBe(mode);
      postCopyBytes = r.bytes;
      // x (the kernel's own memory) and one page in each MiB of the data, which lies in one large mapping: a post-copy
      // move sends ahead the kernels' smallest mappings when it has no record, never that one.
      const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
      expect((await ch.execute('x + 1', 30_000)).result).toBe('42');
      expect((await ch.execute('len(blob[::1 << 20])', 30_000)).result).toBe('512');
      ch.close();
      // The target's daemon done (its last line), and what it was asked for then recorded for the next move.
      const log = await waitFor('the lazy-pages daemon to finish', async () => {
        const text = await newestDaemonLog(to);
        return text?.includes('UFFD transferred pages') ? text : undefined;
      }, { timeoutMs: 30_000 });
      faulted.push(faultedPages(log, Infinity));
      const file = hotPagesPath(to.config.dataDir, to.agent.ctx.registry.get(s.id));
      // After the first move, the file of the one before is there already (agents on one machine share the
      // session's directory), perhaps with the same pages: wait for this move's write of it.
      await waitFor('the hot pages recorded', async () => {
        const at = (await stat(file).catch(() => null))?.mtimeMs;
        return at !== undefined && at > writtenAt ? ((writtenAt = at), recorded.push(await readHotPages(file))) : undefined;
      }, { timeoutMs: 10_000 });
    }
    // The first move's restore faulted on the kernel's heaps and the data's pages one by one and recorded them. The
    // next restore had them eagerly, and the post-copy move sent them with its images: (almost) none of them faulted
    // again, where without they did (a heap page freed and touched again faults anew; the data's pages are lazy).
    const again = (move: number): { recorded: number; again: number; few: boolean } => {
      const before = recorded[move - 1] as HotPages;
      const pages = [...before.values()].flat().length;
      const n = [...(faulted[move] as Map<number, number[]>)].flatMap(([pid, ps]) => ps.filter((p) => before.get(pid)?.includes(p))).length;
      return { recorded: pages, again: n, few: n < pages / 10 };
    };
    expect([...(recorded[0] as HotPages).values()].flat().length).toBeGreaterThan(100);
    expect(again(1)).toMatchObject({ few: true });
    expect(again(2)).toMatchObject({ few: true });
    // Without the record, a post-copy move sends the kernel's smallest mappings whole (~45 MB here) instead of the
    // few MB it asked for.
    await rm(hotPagesPath(b.config.dataDir, b.agent.ctx.registry.get(s.id)));
    const r = await b.client.move(s.id, { url: a.agent.url, token: a.token }, 'post-copy');
    expect({ withRecord: postCopyBytes, without: r.bytes, less: postCopyBytes + (16 << 20) < r.bytes }).toMatchObject({ less: true });
    await a.client.removeSession(s.id);
  });

  it('should move a busy server both ways: the request it is answering goes along and is answered whole; one it had not taken yet is reset at once', async () => {
    const s = await a.client.startSession('busy');
    const big = await bigFile(s.url, s.token, 128);
    // Post-copy twice: with nothing copied ahead, the freeze comes while the server still encodes; with its ~600 MB
    // copied ahead first, the server may have finished and taken the second request by the freeze.
    for (const [from, to, mode, precopy] of [
      [a, b, 'stop-and-copy', undefined],
      [b, a, 'post-copy', false],
      [a, b, 'post-copy', true],
    ] as const) {
      // The server reads and encodes 128 MiB on its one thread before it answers: the move freezes it with that request
      // taken and unanswered, and a second one still in its listen queue, which criu refuses to dump unless told to
      // leave such connections out (--skip-in-flight: "In-flight connection").
      const busy = await big.read();
      // The source resets it while the session is frozen (resetLeftOutRequests); unreset, its client (undici) would
      // learn nothing until its first TCP keepalive, a minute on: given up after 30 s.
      const queued = queuedRequest(s.url, s.token);
      await sleep(50);
      const r = await from.client.move(s.id, { url: to.agent.url, token: to.token }, mode, undefined, { precopy });
      expect(r.mode).toBe(mode);
      await busy.answered();
      expect((await to.client.getSession(s.id)).state).toBe('running');
      expect(await from.client.findSession(s.id)).toBeNull();
      // Reset, never left hanging; or, taken by the server before the freeze, gone along and answered.
      expect(precopy ? ['ECONNRESET', 'answered 200'] : ['ECONNRESET']).toContain(await queued);
    }
    const ch = await KernelChannel.connect(s.url, s.token, big.kernel.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: big.kernel.hash });
    ch.close();
    await b.client.removeSession(s.id);
  });
});

/** The log of the agent's newest lazy-pages daemon, if it has one. */
async function newestDaemonLog(t: TestAgent): Promise<string | undefined> {
  const logs = join(t.config.dataDir, 'logs');
  const names = (await readdir(logs)).filter((n) => n.includes('-lazy-pages-'));
  const newest = (await Promise.all(names.map(async (n) => ({ n, at: (await stat(join(logs, n))).mtimeMs })))).sort((x, y) => y.at - x.at)[0];
  return newest && readFile(join(logs, newest.n), 'utf8');
}
