import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../../src/agent/agent-client.js';
import { LocalProvider, localHostSpecs } from '../../src/cloud/local-provider.js';
import type { HostRecord } from '../../src/core/cloud.js';
import { run, waitFor } from '../../src/util/exec.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { stopOnInterrupt } from './interrupt.js';
import { keepLogs } from './keep-logs.js';
import { measureFirstTouch, type MemoryBaseline } from './memory-baseline.js';

export interface MoveRound {
  from: string;
  to: string;
  bytes: number;
  /** Of `bytes`, those sent before the freeze (post-copy's memory copied ahead). */
  bytesAhead: number;
  /** The source agent's own figure: freeze to the server answering on the target. */
  downtimeSeconds: number;
  /**
   * The downtime as the issue defines it: from the freeze (the agent's frozenAt; the bench shares the agents'
   * clock) to the first execute answered by the moved kernel, asked on the websocket the client kept open
   * across the move.
   */
  frozenToExecuteSeconds: number;
  /** The same from criu's start (dumpStartedAt): post-copy's freeze comes when criu has stopped the session, 10-20 ms later. */
  dumpToExecuteSeconds: number;
  /** The same execute timed from the move request (the session runs until the freeze, while the move is set up). */
  requestToExecuteSeconds: number;
  totalSeconds: number;
  /** From the move request until the target holds all the session's memory (post-copy pulls it after the commit). */
  memoryCompleteSeconds: number;
  /** From the move request until the target has put that memory back into huge pages (HugePageCollapses). */
  hugePagesSeconds: number;
}

/** The agent's modes; 'post-copy-nothing-ahead': post-copy with no memory copied ahead (`--no-precopy`), for comparison. */
export const BENCH_MOVE_MODES = ['stop-and-copy', 'post-copy', 'post-copy-nothing-ahead'] as const;
export type BenchMoveMode = (typeof BENCH_MOVE_MODES)[number];

export interface MigrateFigures {
  sizeMiB: number;
  mode: BenchMoveMode;
  rounds: MoveRound[];
  /** Copying the same bytes from one host's disk to the other's over the same link, fsynced. */
  baselineSeconds: number;
  baselineBytes: number;
  /** The first touch of fresh memory, measured right before the rounds and right after them (memory-baseline.ts). */
  firstTouch: { before: MemoryBaseline; after: MemoryBaseline };
}

// Sends a file over TCP from one namespace and writes it, fsynced, in another.
const RECEIVER = `
import socket, os, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print('ready', flush=True)
c, _ = s.accept()
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
while True:
    b = c.recv(4 << 20)
    if not b: break
    os.write(fd, b)
os.fdatasync(fd); os.close(fd)
`;
const SENDER = `
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with open(sys.argv[3], 'rb') as f:
    c.sendfile(f)
c.close()
`;

async function linkBaseline(from: HostRecord, to: HostRecord, bytes: number): Promise<number> {
  const src = join(from.dataDir, 'baseline.bin');
  const dst = join(to.dataDir, 'baseline.bin');
  await run('dd', ['if=/dev/urandom', `of=${src}`, 'bs=4M', `count=${Math.ceil(bytes / (4 << 20))}`, 'status=none'], { timeoutMs: 300_000 });
  await run('sync', [], { timeoutMs: 60_000 });
  const port = '7399';
  const receiver = spawn('nsenter', [`--net=/run/netns/hsh-${to.name}`, '/usr/bin/python3', '-c', RECEIVER, to.address, port, dst], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => receiver.stdout?.once('data', () => resolve()));
  const t0 = performance.now();
  await run('nsenter', [`--net=/run/netns/hsh-${from.name}`, '/usr/bin/python3', '-c', SENDER, to.address, port, src], { timeoutMs: 300_000 });
  await new Promise<void>((resolve) => (receiver.exitCode !== null ? resolve() : receiver.once('exit', () => resolve())));
  const seconds = (performance.now() - t0) / 1000;
  await rm(src, { force: true });
  await rm(dst, { force: true });
  return seconds;
}

/**
 * Moves a session filled with each size between two local test hosts in each
 * mode, `rounds` times (there and back alternately; the first is the move
 * right after the kernel filled its memory), with the physical baseline of
 * the same run: the same bytes copied disk to disk between the same two
 * namespaces over the same link.
 */
export async function benchMigrate(sizes: number[], log: (m: string) => void, opts: { modes?: BenchMoveMode[]; rounds?: number; keepLogs?: string } = {}): Promise<MigrateFigures[]> {
  const modes = opts.modes ?? BENCH_MOVE_MODES;
  const roundsWanted = opts.rounds ?? 2;
  const stateDir = await mkdtemp(join(tmpdir(), 'hubshift-bench-local-'));
  // With logs kept, the agents log at info: each move's laps ("session moved", "moved-in copy restored", ...).
  const provider = new LocalProvider({ stateDir, bridge: 'hsbench0', subnet: '10.241.0.0/16', logLevel: opts.keepLogs ? 'info' : 'warn' });
  const out: MigrateFigures[] = [];
  const stop = stopOnInterrupt(async () => {
    // A failed copy must not keep the hosts from being removed.
    if (opts.keepLogs) await keepLogs(stateDir, opts.keepLogs).then(() => log(`migrate: the hosts' logs are in ${opts.keepLogs}`), (err: unknown) => log(`migrate: the hosts' logs could not be kept: ${err instanceof Error ? err.message : String(err)}`));
    await provider.removeAll();
    await rm(stateDir, { recursive: true, force: true });
  });
  try {
    log('migrate: two local test hosts');
    const hosts = await provider.create(localHostSpecs(2, 1));
    const clients = await Promise.all(hosts.map(async (h) => new AgentClient(h.agentUrl, (await readFile(h.tokenFile, 'utf8')).trim())));
    for (const sizeMiB of sizes) {
      const s = await clients[0]!.startSession('bench');
      log(`migrate ${sizeMiB} MiB: filling the kernel`);
      // Its websocket stays open across every move, as a user's notebook does: the first execute after a move is
      // asked on it (a new connection would hide what a connected client waits for, such as a retransmission).
      const k = await kernelWithState(s.url, s.token, sizeMiB);
      let baseline: { seconds: number; bytes: number } | undefined;
      // Where the session is: it goes back and forth, and an odd number of rounds leaves it on the other host.
      let at = 0;
      for (const mode of modes) {
        const rounds: MoveRound[] = [];
        const touchBefore = await measureFirstTouch();
        for (let i = 0; i < roundsWanted; i++) {
          const from = at;
          const to = 1 - from;
          log(`migrate ${sizeMiB} MiB (${mode}), round ${i + 1} of ${roundsWanted}: ${hosts[from]!.name} -> ${hosts[to]!.name}`);
          const t0 = performance.now();
          const agentMode = mode === 'stop-and-copy' ? mode : 'post-copy';
          const target = { url: hosts[to]!.agentUrl, token: (await readFile(hosts[to]!.tokenFile, 'utf8')).trim() };
          const r = await clients[from]!.move(s.id, target, agentMode, undefined, mode === 'post-copy-nothing-ahead' ? { precopy: false } : {});
          if (r.mode !== agentMode) throw new Error(`asked for ${agentMode}, the agent moved ${r.mode}`);
          const answer = await k.channel.execute('x + 1');
          const answeredAt = performance.now();
          const requestToExecuteSeconds = (answeredAt - t0) / 1000;
          const frozenToExecuteSeconds = (performance.timeOrigin + answeredAt - Date.parse(r.frozenAt)) / 1000;
          const dumpToExecuteSeconds = (performance.timeOrigin + answeredAt - Date.parse(r.dumpStartedAt)) / 1000;
          if (answer.result !== '42') throw new Error(`moved kernel answered ${JSON.stringify(answer)}`);
          await waitFor('the moved memory to be complete', async () => ((await clients[to]!.getSession(s.id)).memoryArriving ? undefined : true), { timeoutMs: 300_000, intervalMs: 20 });
          const memoryCompleteSeconds = (performance.now() - t0) / 1000;
          // And back in huge pages (the target collapses what the lazy-pages daemon filled 4 KiB at a time): a session
          // moved again at once would be dumped from 4 KiB pages; the next round starts as a session settled there.
          await waitFor('the moved memory to be back in huge pages', async () => ((await clients[to]!.getSession(s.id)).memoryCollapsing ? undefined : true), { timeoutMs: 300_000, intervalMs: 20 });
          const hugePagesSeconds = (performance.now() - t0) / 1000;
          const full = await askState(k.channel);
          if (full.hash !== k.hash) throw new Error('moved kernel holds different bytes');
          at = to;
          rounds.push({ from: hosts[from]!.name, to: hosts[to]!.name, bytes: r.bytes, bytesAhead: r.bytesAhead, downtimeSeconds: r.downtimeSeconds, frozenToExecuteSeconds, dumpToExecuteSeconds, requestToExecuteSeconds, totalSeconds: r.seconds, memoryCompleteSeconds, hugePagesSeconds });
        }
        const touchAfter = await measureFirstTouch();
        if (!baseline) {
          // The bytes a stop-and-copy move carries; post-copy moves the same memory, mostly after the commit.
          const bytes = mode === 'stop-and-copy' ? rounds[0]!.bytes : (await clients[at]!.metrics(s.id).then((m) => Number(m.rssBytes))) || sizeMiB * 2 ** 20;
          log(`migrate ${sizeMiB} MiB: link baseline`);
          baseline = { seconds: await linkBaseline(hosts[0]!, hosts[1]!, bytes), bytes };
        }
        out.push({ sizeMiB, mode, rounds, baselineSeconds: baseline.seconds, baselineBytes: baseline.bytes, firstTouch: { before: touchBefore, after: touchAfter } });
      }
      k.channel.close();
      await clients[at]!.removeSession(s.id);
    }
  } finally {
    await stop();
  }
  return out;
}

