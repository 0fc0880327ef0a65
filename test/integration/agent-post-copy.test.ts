import { chmod, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AgentClient } from '../../src/agent/agent-client.js';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { LocalProvider, localHostSpecs } from '../../src/cloud/local-provider.js';
import type { HostRecord } from '../../src/core/cloud.js';
import { Session } from '../../src/core/session.js';
import { SERVER_VPID } from '../../src/agent/sandbox.js';
import { hotPagesPath } from '../../src/agent/hot-pages.js';
import { lazyTransferHandedOver } from '../../src/criu/lazy-pages.js';
import { hasLockRules } from '../../src/criu/network-lock.js';
import { run, sleep, waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly, processTree } from '../../src/util/proc.js';
import { hostIptables } from '../helpers/host-iptables.js';
import { askState, kernelWithState, type KernelState } from '../helpers/kernel.js';
import { expectOnlyCopy, sessionProcesses, treeAnonHugePagesKiB } from '../helpers/session-processes.js';
import { killAtPostRestore } from '../helpers/action-script.js';
import { removeLeftSessions } from '../helpers/left-sessions.js';
import { buildAlignedStack, pageAlignedStacks } from '../../src/criu/lazy-stack.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { expectFrozenWithin } from '../helpers/move-result.js';

/** Pids of criu processes (of `command`, if given) whose command line names a path under `dir` (a host's data directory). */
async function criuUnder(dir: string, command?: 'dump' | 'lazy-pages'): Promise<number[]> {
  const r = await run('ps', ['-eo', 'pid=,args='], { timeoutMs: 10_000 });
  return r.stdout
    .split('\n')
    // The binary's path then its command (the private criu runs through its own ld.so); not the agents' --criu-action-script.
    .filter((l) => /\/criu (dump|lazy-pages|page-server|restore) /.test(l) && l.includes(dir) && (command === undefined || l.includes(`/criu ${command} `)))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

/** What a host's agent logged of a session's move: its account of the move, and its warnings and errors. */
async function movedLog(host: HostRecord, id: string): Promise<string> {
  const log = await readFile(join(host.dataDir, 'agent.log'), 'utf8').catch(() => '');
  return log.split('\n').filter((l) => l.includes(id) && (l.includes('session moved') || /"level":(40|50|60)/.test(l))).join('\n');
}

/**
 * Bytes criu wrote itself of the session's kernels (every process but its
 * server), as the source's account of a move
 * (movedLog) names them under `criuWrote` (processes of 1 MiB or more).
 */
function kernelsWrittenByCriu(account: string): number {
  const line = account.split('\n').find((l) => l.includes('session moved'));
  const parsed = line === undefined ? undefined : CriuWroteAccount.safeParse(JSON.parse(line));
  if (!parsed?.success) return 0;
  return Object.entries(parsed.data.criuWrote).reduce((a, [pid, w]) => (pid === String(SERVER_VPID) ? a : a + w.bytes), 0);
}

/**
 * Whether the aligned-stack process `pid` (infra/native/aligned-stack.c,
 * holding `mib` MiB) still has in each page of its memory the byte it wrote
 * there, the page's number modulo 256 ('intact'), or what is wrong. Its
 * memory is the top of the one mapping of that size (its thread's stack,
 * mapped next, may have merged below it). Read through /proc/PID/mem: call
 * it once the move's memory has all arrived, so that the read does not
 * stand on a remote fault into lazy memory (read before that, it failed
 * once in five runs on 2026-12-04, why not kept).
 */
async function alignedStackMemory(pid: number, mib: number): Promise<string> {
  const bytes = mib << 20;
  const ranges = (await readFile(`/proc/${pid}/maps`, 'utf8'))
    .split('\n')
    .map((l) => l.split(/\s+/))
    .filter((f) => f[1] === 'rw-p' && f.length >= 5 && (f[5] ?? '') === '')
    .map((f) => f[0]!.split('-').map((h) => parseInt(h, 16)) as [number, number])
    .filter(([lo, hi]) => hi - lo >= bytes && hi - lo < bytes + (1 << 20));
  if (ranges.length !== 1) return `${ranges.length} anonymous mappings of about ${mib} MiB`;
  const mem = await open(`/proc/${pid}/mem`, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await mem.read(buf, 0, bytes, ranges[0]![1] - bytes);
    if (bytesRead !== bytes) return `read ${bytesRead} of ${bytes} bytes`;
    for (let page = 0; page < bytes / 4096; page++) if (buf[page * 4096] !== (page & 0xff)) return `page ${page} begins with ${buf[page * 4096]}`;
    return 'intact';
  } finally {
    await mem.close();
  }
}

const CriuWroteAccount = z.object({ criuWrote: z.record(z.string(), z.object({ bytes: z.number() })) });

/** Runs `fn` with a host agent's own criu hook replaced by one that fails criu's post-dump stage, then puts the hook back. */
async function withHookFailingAtPostDump<T>(host: HostRecord, fn: () => Promise<T>): Promise<T> {
  const hook = join(host.dataDir, 'criu-hook.sh');
  const original = await readFile(hook, 'utf8');
  await writeFile(hook, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && exit 1\nexit 0\n');
  try {
    return await fn();
  } finally {
    await writeFile(hook, original);
  }
}

// New connections out of the host to an ephemeral port: the page server's (the agents listen on 7301, their answers are not
// new, and criu's own loopback checks do not leave the host).
const PAGE_SERVER_BLOCK = ['OUTPUT', '-o', 'hsbr0', '-p', 'tcp', '--syn', '--dport', '32768:60999', '-j', 'REJECT', '--reject-with', 'tcp-reset'];

/**
 * Post-copy between two local test hosts (each its own network namespace and
 * agent): criu freezes the session and sends all but its memory, the target
 * restores at once and pulls the pages from the source's criu page server.
 */
describe('moving a session post-copy between local test hosts', () => {
  let stateDir: string;
  let provider: LocalProvider;
  let hosts: HostRecord[];
  let clients: AgentClient[];
  let tokens: string[];
  let flag: string;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'hubshift-postcopy-'));
    // The operator's action script: fails criu's post-dump stage while the flag file says so, and kills the process
    // named in ${flag}.kill (an agent) at a restore's post-restore stage: inside criu restore, the tasks all there.
    // At that stage it also notes how much of the restored server's memory is in huge pages (${flag}.huge).
    flag = join(stateDir, 'post-dump-fault');
    await writeFile(
      `${flag}.sh`,
      `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && [ "$(cat '${flag}' 2>/dev/null)" = fail ] && exit 1\n` +
        `[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] && awk '/^AnonHugePages:/ { print $2 }' "/proc/$CRTOOLS_INIT_PID/smaps_rollup" >> '${flag}.huge'\n` +
        `${killAtPostRestore(`${flag}.kill`)}exit 0\n`,
    );
    await chmod(`${flag}.sh`, 0o755);
    const criuActionScript = `${flag}.sh`;
    provider = new LocalProvider({ stateDir, bridge: 'hspc0', subnet: '10.251.0.0/16', incomingTimeoutSeconds: 4, moveIdleTimeoutSeconds: 5, criuActionScript, logLevel: 'info' });
    hosts = await provider.create(localHostSpecs(2, 0));
    tokens = await Promise.all(hosts.map(async (h) => (await readFile(h.tokenFile, 'utf8')).trim()));
    clients = hosts.map((h, i) => new AgentClient(h.agentUrl, tokens[i]!));
  });

  afterAll(async () => {
    await provider?.removeAll();
    // Nothing of the moves outlives the hosts: no criu dump serving pages, no lazy-pages daemon.
    const left = await criuUnder(stateDir);
    await rm(stateDir, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  // A test that failed midway leaves its session wherever it got to: not the next test's problem.
  afterEach(async () => {
    await removeLeftSessions(clients ?? []);
  });

  // The source host's end of its link to the bridge (toward the target).
  const rootVeth = 'hspc0u1';
  /** A session on the first host holding 256 MiB in a kernel, its host's link throttled to `rate` (`unthrottle` takes that back). */
  async function sessionOnSlowLink(user: string, rate: string) {
    const s = await clients[0]!.startSession(user);
    const k = await kernelWithState(s.url, s.token, 256);
    k.channel.close();
    await run('tc', ['qdisc', 'add', 'dev', rootVeth, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms']);
    const unthrottle = (): Promise<unknown> => run('tc', ['qdisc', 'del', 'dev', rootVeth, 'root'], { allowFailure: true });
    return { s, k, unthrottle };
  }

  it('should move a 256 MiB session with its IP, kernel state and open websocket, and leave nothing on the source once its memory has arrived', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    expect((await b.health()).postCopy).toBe(true);
    const s = await a.startSession('pc');
    const k = await kernelWithState(s.url, s.token, 256);
    // The session's glibc put the kernel's bytes in huge pages (GLIBC_TUNABLES from the agent).
    expect(await treeAnonHugePagesKiB(s.pid as number)).toBeGreaterThan(200 * 1024);
    // auto: both hosts can, so post-copy is chosen.
    await writeFile(`${flag}.huge`, '');
    const requestedAt = Date.now();
    const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! });
    expect(r).toMatchObject({ id: s.id, url: s.url, mode: 'post-copy', target: hosts[1]!.agentUrl });
    // The target's criu filled the server's memory (on glibc's malloc, advised) in huge pages (hubshift's build), as the
    // action script saw it before the session ran: after a move, the agent collapses memory only once all has arrived.
    const serverHuge = (await readFile(`${flag}.huge`, 'utf8')).trim().split('\n').map(Number);
    expect(serverHuge).toHaveLength(1);
    expect(serverHuge[0]).toBeGreaterThanOrEqual(20 * 1024);
    // From the stream's header on, the target warmed memory for that fill (landing-memory.ts), done before its restore.
    const restoredIn = (await readFile(join(hosts[1]!.dataDir, 'agent.log'), 'utf8')).split('\n').find((l) => l.includes(s.id) && l.includes('moved-in copy restored'));
    expect(JSON.parse(restoredIn ?? '{}')).toMatchObject({ landingSeconds: expect.any(Number) });
    expectFrozenWithin(r, requestedAt, Date.now());
    // The stream carried the images and the server's memory (tens of MB), not the kernel's 256 MiB: hubshift sent none of
    // it eagerly. Now and then criu itself writes a whole process into a lazy dump's images (about one fresh kernel in
    // 300 here; see README): what it wrote of the kernels, as the source's account names it, is criu's, not counted.
    // The account also says, on a failure, where the bytes went (embedded, in the parent, copied ahead).
    const account = await movedLog(hosts[0]!, s.id);
    const byCriu = kernelsWrittenByCriu(account);
    expect(r.bytes, account).toBeGreaterThan(16 * 2 ** 20);
    expect(r.bytes - byCriu, account).toBeLessThan(160 * 2 ** 20);
    // That memory went ahead, before the freeze; while frozen, only the images and what changed since.
    expect(r.bytesAhead, account).toBeGreaterThan(16 * 2 ** 20);
    expect(r.bytes - byCriu - r.bytesAhead, account).toBeLessThan(24 * 2 ** 20);
    expect(await a.findSession(s.id)).toBeNull();
    // The websocket opened before the move answers from the target, with every byte the kernel held.
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    await waitFor('the memory to have arrived', async () => ((await b.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    expect((await b.getSession(s.id)).state).toBe('running');
    // The lazy-pages daemon filled them 4 KiB at a time; the target agent put them back into huge pages.
    await waitFor('the memory to be back in huge pages', async () => ((await b.getSession(s.id)).memoryCollapsing ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    expect(await treeAnonHugePagesKiB((await b.getSession(s.id)).pid as number)).toBeGreaterThan(200 * 1024);
    // The source's criu served the last page and ended its frozen copy.
    await waitFor('the source criu to exit', async () => ((await criuUnder(hosts[0]!.dataDir)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    // And back again.
    const back = await b.move(s.id, { url: hosts[0]!.agentUrl, token: tokens[0]! }, 'post-copy');
    expect(back).toMatchObject({ url: s.url, mode: 'post-copy' });
    expect(back.bytesAhead).toBeGreaterThan(16 * 2 ** 20);
    // The freeze is when criu had the session's processes stopped, some ms after criu's start (10-20 here): seen
    // after it in at least one of the two moves (the first poll may come late), never before it nor long after.
    const gaps = [r, back].map((m) => Date.parse(m.frozenAt) - Date.parse(m.dumpStartedAt));
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(0);
    for (const g of gaps) expect(g).toBeLessThan(1_000);
    expect(Math.max(...gaps)).toBeGreaterThan(0);
    // Both times compared with the frozen memory while criu dumped, not after it.
    for (const h of hosts) expect(await readFile(join(h.dataDir, 'agent.log'), 'utf8')).not.toMatch(/compared after the dump/);
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await waitFor('the memory to have arrived back', async () => ((await a.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    await a.removeSession(s.id);
  });

  it("should move a session whose process has a thread blocked with its stack pointer page-aligned post-copy, that process's memory lazy, where criu keeps it so (hubshift's build), else stop-and-copy", async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const exact = (await loadSelectedCriu()).lazyStackExact === true;
    const bin = await buildAlignedStack(stateDir);
    const s = await a.startSession('stk');
    const k = await kernelWithState(s.url, s.token, 16);
    // A process of the session (the kernel's child) holding 32 MiB, its thread blocked with a page-aligned stack pointer.
    const started = await k.channel.execute(`import subprocess\nstk = subprocess.Popen(['${bin}', '0', '32'], stdout=subprocess.PIPE)\nprint(stk.stdout.readline().decode().strip())`);
    expect(started.status).toBe('ok');
    const tree = async (pid: number) => (await processTree(pid)).filter((p) => p !== pid);
    await waitFor('the thread to block', async () => ((await pageAlignedStacks(await tree(s.pid as number))).some((t) => t.tid !== t.pid) ? true : undefined), { timeoutMs: 10_000 });
    const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! });
    const account = await movedLog(hosts[0]!, s.id);
    if (exact) {
      expect(r).toMatchObject({ id: s.id, url: s.url, mode: 'post-copy' });
      // Stock criu wrote the whole process (its 32 MiB) into the images; of the kernel criu writes only what cannot be lazy (2-3 MB).
      expect(kernelsWrittenByCriu(account), account).toBeLessThan(16 * 2 ** 20);
    } else {
      expect(r).toMatchObject({ id: s.id, url: s.url, mode: 'stop-and-copy' });
      expect(await readFile(join(hosts[0]!.dataDir, 'agent.log'), 'utf8')).toMatch(new RegExp(`"session":"${s.id}".*stack pointer page-aligned.*moving stop-and-copy`));
    }
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    // The process came along, its thread blocked where it was, its memory whole once it has all arrived.
    await waitFor('the memory to have arrived', async () => ((await b.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    const moved = await b.getSession(s.id);
    const aligned = (await pageAlignedStacks(await tree(moved.pid as number))).filter((t) => t.tid !== t.pid);
    expect(aligned).toHaveLength(1);
    expect(await alignedStackMemory(aligned[0]!.pid, 32)).toBe('intact');
    expect((await k.channel.execute('print(stk.poll())')).stdout.trim()).toBe('None');
    k.channel.close();
    await b.removeSession(s.id);
  });

  it('should leave exactly one copy, the target\'s, when criu fails after the last page has gone (its post-dump stage)', async () => {
    const a = clients[0]!;
    const s = await a.startSession('pd');
    const k = await kernelWithState(s.url, s.token, 64);
    /**
     * Moves the session post-copy from `from` to `to`, waits until it runs there with all its memory and the source's
     * copy is gone; returns whether the source saw criu fail after the last page (and killed the copy criu let run).
     */
    const moveAndSettle = async (from: number, to: number): Promise<boolean> => {
      const [src, dst] = [clients[from]!, clients[to]!];
      const sourcePid = (await src.getSession(s.id)).pid!;
      const r = await src.move(s.id, { url: hosts[to]!.agentUrl, token: tokens[to]! }, 'post-copy');
      expect(r.mode).toBe('post-copy');
      await waitFor('the memory to have arrived', async () => ((await dst.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
      await waitFor('the source criu to exit', async () => ((await criuUnder(hosts[from]!.dataDir)).length === 0 ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
      // criu resumed the frozen copy when its post-dump stage failed; the source must not keep it.
      await waitFor('the source copy to be gone', async () => ((await isAlive(sourcePid)) ? undefined : true), { timeoutMs: 15_000, intervalMs: 100 });
      expect(await src.findSession(s.id)).toBeNull();
      expect((await dst.getSession(s.id)).state).toBe('running');
      expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
      const log = await readFile(join(hosts[from]!.dataDir, 'agent.log'), 'utf8');
      return log.split('\n').some((l) => l.includes(s.id) && l.includes('criu failed after every page reached the target'));
    };
    // The operator's script fails at post-dump: too late to veto a post-copy move (the target has every page), so it is ignored.
    await writeFile(flag, 'fail');
    try {
      // criu ended normally: the hook did not let the script's failure through.
      expect(await moveAndSettle(0, 1)).toBe(false);
    } finally {
      await writeFile(flag, '');
    }
    // criu itself fails after the last page (here: hubshift's own hook at post-dump) and lets the frozen copy run again.
    expect(await withHookFailingAtPostDump(hosts[1]!, () => moveAndSettle(1, 0))).toBe(true);
    k.channel.close();
    await a.removeSession(s.id);
  });

  it('should resume the session on the source, unlocked, when the target cannot reach its page server, and fall back to stop-and-copy in auto mode', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pf');
    const k = await kernelWithState(s.url, s.token, 32);
    await hostIptables(hosts[1]!, ['-A', ...PAGE_SERVER_BLOCK]);
    try {
      // Nothing copied ahead: it fails once frozen, and the frozen copy runs again.
      const failure = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy', undefined, { precopy: false }).then(
        () => null,
        (err: unknown) => err as Error,
      );
      expect(failure?.message).toMatch(/\(post-copy\) failed .*runs here again/);
      const here = await a.getSession(s.id);
      expect(here.state).toBe('running');
      expect(await b.findSession(s.id)).toBeNull();
      // The same kernel, on the websocket it had: the frozen copy ran again, and criu's lock rules are gone.
      expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
      expect(await hasLockRules(`/proc/${here.pid}/ns/net`)).toBe(false);
      expect(await criuUnder(hosts[0]!.dataDir)).toEqual([]);
      expect(await criuUnder(hosts[1]!.dataDir)).toEqual([]);
      // auto: post-copy fails (now before the freeze: the memory it copies ahead goes on the same blocked kind of
      // port), the session runs here as before, and stop-and-copy moves it.
      const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! });
      expect(r.mode).toBe('stop-and-copy');
    } finally {
      await hostIptables(hosts[1]!, ['-D', ...PAGE_SERVER_BLOCK]);
    }
    expect((await b.getSession(s.id)).state).toBe('running');
    expect(await a.findSession(s.id)).toBeNull();
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await b.removeSession(s.id);
  });

  it('should give the session back to the source, and leave no copy on the target, when the link dies while the memory is still arriving', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    // 400 Mbit/s toward the target: its 256 MiB take seconds to arrive after the commit, however fast the machine.
    const { s, k, unthrottle } = await sessionOnSlowLink('pl', '400mbit');
    const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy').catch(async (err: unknown) => {
      await unthrottle();
      throw err;
    });
    // Committed: the session runs on the target while its memory is still coming (slowly). Now the link goes, silently.
    const arriving = (await b.getSession(s.id).catch(() => null))?.memoryArriving;
    await run('ip', ['link', 'set', rootVeth, 'down']);
    try {
      expect(arriving).toBe(true);
      expect(r.mode).toBe('post-copy');
      const record = await readFile(join(hosts[1]!.dataDir, 'sessions', s.id, 'session.json'), 'utf8').then((t) => Session.parse(JSON.parse(t)));
      // Both sides give up after the move idle timeout (5 s here): the source's criu lets its frozen copy run again.
      const back = await waitFor('the session to run on the source again', async () => {
        const here = await a.findSession(s.id);
        return here?.state === 'running' ? here : undefined;
      }, { timeoutMs: 40_000, intervalMs: 250 });
      expect(back.error).toMatch(/broke after the commit .*resumed here as it was at the freeze/);
      await waitFor('the target copy to be killed', async () => ((await isAlive(record.pid!)) ? undefined : true), { timeoutMs: 20_000, intervalMs: 250 });
    } finally {
      await unthrottle();
      await run('ip', ['link', 'set', rootVeth, 'up']);
    }
    await waitFor('the target to let go of its copy', async () => ((await b.findSession(s.id)) === null ? true : undefined), { timeoutMs: 20_000, intervalMs: 250 });
    await waitFor('no criu left on either host', async () => ((await criuUnder(hosts[0]!.dataDir)).length + (await criuUnder(hosts[1]!.dataDir)).length === 0 ? true : undefined), { timeoutMs: 20_000, intervalMs: 250 });
    // Exactly one copy, the source's, with the state it had at the freeze.
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    await a.removeSession(s.id);
  });

  /**
   * A post-copy move of a session on a 200 Mbit/s link (its ~100 MB of eager memory then take seconds on the bulk
   * channel), the source's link cut 0.3 s into `step`: the move fails with `failure`, the session runs on the
   * source with its state, the target lets go and no criu is left on either host.
   */
  async function cutLinkDuring(user: string, step: string, precopy: boolean, failure: RegExp): Promise<void> {
    const [a, b] = clients as [AgentClient, AgentClient];
    const { s, k, unthrottle } = await sessionOnSlowLink(user, '200mbit');
    const moving = a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy', undefined, { precopy }).then(
      () => null,
      (err: unknown) => err as Error,
    );
    try {
      await waitFor(`the source to be at ${step}`, async () => ((await a.progress(s.id).catch(() => null))?.step === step ? true : undefined), { timeoutMs: 60_000, intervalMs: 2 });
      // Well into the memory (a second of it at this rate), before the target can have restored anything.
      await new Promise((r) => setTimeout(r, 300));
      await run('ip', ['link', 'set', rootVeth, 'down']);
      expect((await moving)?.message).toMatch(failure);
    } finally {
      await unthrottle();
      await run('ip', ['link', 'set', rootVeth, 'up']);
    }
    expect((await a.getSession(s.id)).state).toBe('running');
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    await waitFor('the target to let go of the move', async () => ((await b.findSession(s.id)) === null ? true : undefined), { timeoutMs: 20_000, intervalMs: 250 });
    await waitFor('no criu left on either host', async () => ((await criuUnder(hosts[0]!.dataDir)).length + (await criuUnder(hosts[1]!.dataDir)).length === 0 ? true : undefined), { timeoutMs: 20_000, intervalMs: 250 });
    await a.removeSession(s.id);
  }

  it('should leave the session running on the source, never frozen, and no copy on the target, when the link dies while its memory is copied ahead', async () => {
    await cutLinkDuring('pa', 'copying memory ahead (post-copy)', true, /copying its memory ahead, before the freeze.*runs here as before/);
  });

  it('should resume the session on the source, and leave no copy on the target, when the link dies while its memory goes on the bulk channel', async () => {
    // All of it after the freeze: nothing copied ahead.
    await cutLinkDuring('pb', 'sending (post-copy)', false, /runs here again/);
  });

  it('should take the session back when its post-copy transfer breaks while the source agent is down', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pr');
    const k = await kernelWithState(s.url, s.token, 1024);
    k.channel.close();
    const r = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy');
    expect(r.mode).toBe('post-copy');
    // The target's lazy-pages daemon is held (the gigabyte cannot finish arriving), the source's agent dies, then the
    // connection is reset (as a failing network does) and the daemon ends.
    const daemons = await criuUnder(hosts[1]!.dataDir, 'lazy-pages');
    for (const p of daemons) killQuietly(p, 'SIGSTOP');
    // Unless the daemon had already told the source it was done (then the source's criu ends its copy, and the target's is the one).
    const logs = join(hosts[1]!.dataDir, 'logs');
    const daemonLog = (await readdir(logs)).find((n) => n.startsWith(`in-${s.id}-lazy-pages-`));
    const serving = daemons.length === 1 && daemonLog !== undefined && !(await lazyTransferHandedOver(join(logs, daemonLog)));
    killQuietly((await provider.hosts())[0]!.agentPid!, 'SIGKILL');
    const args = (await readFile(`/proc/${daemons[0]}/cmdline`, 'utf8')).split('\0');
    const pageServer = `${args[args.indexOf('--address') + 1]}:${args[args.indexOf('--port') + 1]}`;
    await run('nsenter', [`--net=/run/netns/hsh-${hosts[1]!.name}`, 'ss', '-K', 'dst', pageServer], { allowFailure: true });
    for (const p of daemons) killQuietly(p, 'SIGKILL');
    await provider.restartAgent(hosts[0]!.name);
    if (serving) {
      // The restarted agent finds criu gone and the frozen copy running again: the session is its own once more.
      const back = await waitFor('the session to run on the source again', async () => {
        const here = await a.findSession(s.id);
        return here?.state === 'running' ? here : undefined;
      }, { timeoutMs: 30_000, intervalMs: 250 });
      expect(back.error).toMatch(/broke while this agent was restarting/);
      await waitFor('the target to let go of its copy', async () => ((await b.findSession(s.id)) === null ? true : undefined), { timeoutMs: 20_000, intervalMs: 250 });
    } else {
      // Every page had arrived before the daemon was held: the move is complete, and the target runs it.
      await waitFor('the target to run it with all its memory', async () => ((await b.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 20_000, intervalMs: 250 });
      expect(await a.findSession(s.id)).toBeNull();
      expect((await b.getSession(s.id)).state).toBe('running');
    }
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    await (serving ? a : b).removeSession(s.id);
  });

  it("should leave exactly one copy, the target's, when criu fails after the last page while the source agent is down", async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    // 400 Mbit/s toward the target: its 256 MiB take seconds to arrive after the commit, however fast the machine (a
    // gigabyte on the open link once arrived, now and then, before the agent was killed).
    const { s, k: filled, unthrottle } = await sessionOnSlowLink('pf', '400mbit');
    const sourcePid = s.pid!;
    try {
      // criu fails its post-dump stage (before its page server starts), and acts on it only after the last page:
      // it lets the frozen copy run again. The source's agent dies before that, while the memory is still on its way.
      const r = await withHookFailingAtPostDump(hosts[0]!, () => a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy'));
      expect(r.mode).toBe('post-copy');
      const dump = await criuUnder(hosts[0]!.dataDir, 'dump');
      expect(dump.length).toBe(1);
      killQuietly((await provider.hosts())[0]!.agentPid!, 'SIGKILL');
      await waitFor('the source criu to exit', async () => ((await isAlive(dump[0]!)) ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    } finally {
      await unthrottle();
    }
    await provider.restartAgent(hosts[0]!.name);
    // The restarted agent finds the copy criu let run, asks the target, and ends the copy here.
    await waitFor('the source copy to be gone', async () => ((await isAlive(sourcePid)) ? undefined : true), { timeoutMs: 30_000, intervalMs: 200 });
    expect(await a.findSession(s.id)).toBeNull();
    const there = await b.getSession(s.id);
    expect(there.state).toBe('running');
    expect(there.memoryArriving).toBeFalsy();
    const ch = await KernelChannel.connect(s.url, s.token, filled.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: filled.hash });
    ch.close();
    const log = await readFile(join(hosts[0]!.dataDir, 'agent.log'), 'utf8');
    expect(log.split('\n').some((l) => l.includes(s.id) && l.includes('while this agent was down'))).toBe(true);
    await b.removeSession(s.id);
  });

  /** The target's agent, back, finds the stopped copy its killed predecessor's restore left, and runs it: the session answers there, its state whole. */
  const expectRunsOnTargetOnceBack = async (id: string, k: KernelState): Promise<void> => {
    await provider.restartAgent(hosts[1]!.name);
    expect((await clients[1]!.getSession(id)).state).toBe('running');
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
  };

  it('should run the session on the target, once its agent is back, when that agent is killed inside criu restore and the memory arrives without it', async () => {
    const [a] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pr');
    const k = await kernelWithState(s.url, s.token, 64);
    // criu finishes the restore without its agent; the daemon fetches every page, and the source's criu ends its copy.
    await writeFile(`${flag}.kill`, String((await provider.hosts())[1]!.agentPid));
    const failure = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy').then(
      () => null,
      (err: unknown) => err as Error,
    );
    await rm(`${flag}.kill`, { force: true });
    expect(failure?.message).toMatch(/runs on the target/);
    expect(await a.findSession(s.id)).toBeNull();
    // The stopped copy is the session's only one: the agent, back, finds it by the pid file its restore wrote, and runs it.
    await expectRunsOnTargetOnceBack(s.id, k);
    expect(await readdir(join(hosts[1]!.dataDir, 'incoming')).catch(() => [])).toEqual([]);
    // Its guard saw the transfer handed over and left it (it fired a second after the commit timeout).
    await sleep(5_500);
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await clients[1]!.removeSession(s.id);
    expect(await sessionProcesses(s.id)).toEqual([]);
  });

  it('should restore no page as it was copied ahead when the kernel wrote it since: a thread writing every page of a buffer and of a private file mapping across two moves (the second sending hot pages among them) finds each as it left it', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pw');
    const k = await kernelWithState(s.url, s.token, 64);
    // A thread that writes the next value into the first byte of each of 256 pages, round after round, and counts
    // every page that does not hold what it last wrote there: a page restored from the copy ahead after it changed
    // (or any other stale byte) shows as bad. The same for 16 pages of a file mapped privately (its written pages
    // are criu's own, dumped into the images, and copied ahead too); the file, one of Python's own, is not changed.
    const spin = [
      'import mmap, threading, typing',
      'spun = bytearray(4096 * 256)',
      "with open(typing.__file__, 'rb') as f: cow = mmap.mmap(f.fileno(), 4096 * 16, access=mmap.ACCESS_COPY)",
      'for p in range(16): cow[p * 4096] = 0',
      "spin = {'k': 0, 'bad': 0, 'rounds': 0}",
      'def spinner():',
      '    while True:',
      "        k = spin['k']",
      '        for p in range(256):',
      "            if spun[p * 4096] != k: spin['bad'] += 1",
      '            spun[p * 4096] = (k + 1) % 251',
      '        for p in range(16):',
      "            if cow[p * 4096] != k: spin['bad'] += 1",
      '            cow[p * 4096] = (k + 1) % 251',
      "        spin['k'] = (k + 1) % 251",
      "        spin['rounds'] += 1",
      'threading.Thread(target=spinner, daemon=True).start()',
    ].join('\n');
    expect((await k.channel.execute(spin)).status).toBe('ok');
    const counts = async (): Promise<[number, number]> => JSON.parse((await k.channel.execute("[spin['bad'], spin['rounds']]")).result ?? '[]') as [number, number];
    const there = await a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy');
    expect(there.bytesAhead).toBeGreaterThan(16 * 2 ** 20);
    const [, roundsThere] = await counts();
    // A record of hot pages for the way back, as a lazy restore would write one: every other page the thread writes.
    // The move sends those pages of the kernel, copied ahead and compared after the freeze like the rest, in
    // place of its smallest mappings: tens of MB less.
    const [vpid, at] = ((await k.channel.execute('import ctypes, os\nprint(os.getpid(), ctypes.addressof(ctypes.c_char.from_buffer(spun)))')).stdout ?? '').trim().split(' ').map(Number) as [number, number];
    const hot = Array.from({ length: 128 }, (_, i): [number, number] => [Math.floor((at + 2 * i * 4096) / 4096) * 4096, 1]);
    await writeFile(hotPagesPath(hosts[0]!.dataDir, { id: s.id }), JSON.stringify({ version: 1, processes: { [vpid]: hot } }));
    const back = await b.move(s.id, { url: hosts[0]!.agentUrl, token: tokens[0]! }, 'post-copy');
    expect(back.bytesAhead).toBeGreaterThan(16 * 2 ** 20);
    expect({ there: there.bytes, back: back.bytes, less: back.bytes + (16 << 20) < there.bytes }).toMatchObject({ less: true });
    await new Promise((r) => setTimeout(r, 500));
    const [bad, rounds] = await counts();
    // It kept running across both moves, and never found a page other than it left it.
    expect(rounds).toBeGreaterThan(roundsThere);
    expect(bad).toBe(0);
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await waitFor('the memory to have arrived back', async () => ((await a.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    await a.removeSession(s.id);
  });

  it('should hold the lazy-pages daemon stopped while the copy waits for its commit, and let it bring the memory in once the session runs', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('ph');
    const k = await kernelWithState(s.url, s.token, 256);
    const { hostname, port } = new URL(hosts[1]!.agentUrl);
    // The source's commit request is dropped on its way out for a second: TCP sends it again later, within the
    // target's commit timeout (4 s here).
    const rule = ['OUTPUT', '-p', 'tcp', '-d', hostname, '--dport', port, '-m', 'string', '--algo', 'bm', '--string', '/commit', '-j', 'DROP'];
    await hostIptables(hosts[0]!, ['-A', ...rule]);
    let blocked = true;
    const unblock = async (): Promise<void> => {
      if (blocked) await hostIptables(hosts[0]!, ['-D', ...rule]);
      blocked = false;
    };
    try {
      const moving = a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy');
      moving.catch(() => undefined);
      // The copy restored and waiting: its daemon stopped (state T), not fetching the memory ahead of the commit.
      const state = async (pid: number): Promise<string> => (await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).replace(/^.*\) /s, '').slice(0, 1);
      const daemon = await waitFor('the target to hold its restored copy and daemon stopped', async () => {
        if ((await b.findSession(s.id))?.state !== 'restoring') return undefined;
        const [d] = await criuUnder(hosts[1]!.dataDir, 'lazy-pages');
        return d !== undefined && (await state(d)) === 'T' ? d : undefined;
      }, { timeoutMs: 30_000, intervalMs: 10 });
      await sleep(300);
      expect(await state(daemon)).toBe('T');
      expect((await b.getSession(s.id)).memoryArriving).toBe(true);
      await unblock();
      expect((await moving).mode).toBe('post-copy');
      await waitFor('the memory to have arrived', async () => ((await b.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 60_000, intervalMs: 100 });
    } finally {
      await unblock();
    }
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await b.removeSession(s.id);
  });

  it('should leave the session in exactly one place when the target agent is killed while restoring, and the agent back settle what it left', async () => {
    const [a, b] = clients as [AgentClient, AgentClient];
    const s = await a.startSession('pk');
    const k = await kernelWithState(s.url, s.token, 64);
    const moving = a.move(s.id, { url: hosts[1]!.agentUrl, token: tokens[1]! }, 'post-copy').then(
      () => null,
      (err: unknown) => err as Error,
    );
    await waitFor('the target to be restoring the session', async () => ((await b.progress(s.id).catch(() => null))?.operation === 'move in' ? true : undefined), { timeoutMs: 60_000, intervalMs: 2 });
    killQuietly((await provider.hosts())[1]!.agentPid!, 'SIGKILL');
    const failure = await moving;
    if (/runs on the target/.test(failure?.message ?? '')) {
      // The target had every page before its agent died: the source's criu ended its copy, the target's is the one.
      expect(await a.findSession(s.id)).toBeNull();
      await expectRunsOnTargetOnceBack(s.id, k);
      k.channel.close();
      await b.removeSession(s.id);
      return;
    }
    // Caught before the commit: exactly one copy, the source's, on the websocket it had.
    expect(failure?.message).toMatch(/runs here again/);
    const here = await a.getSession(s.id);
    expect(here.state).toBe('running');
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    // The target's copy, if criu got as far as making one, goes with its guard or the agent back; nothing of it stays.
    await provider.restartAgent(hosts[1]!.name);
    expect(await b.findSession(s.id)).toBeNull();
    await expectOnlyCopy(s.id, here.pid!);
    // Its lazy-pages daemon and restore ended with the page server they fetched from.
    await waitFor('no criu left on the target', async () => ((await criuUnder(hosts[1]!.dataDir)).length === 0 ? true : undefined), { timeoutMs: 20_000, intervalMs: 100 });
    expect(await askState(k.channel)).toEqual({ answer: '42', hash: k.hash });
    k.channel.close();
    await a.removeSession(s.id);
  });
});
