import type { LandingHold } from '../../src/agent/landing-memory.js';
import { chmod, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { faultedPages } from '../../src/criu/lazy-faults.js';
import { hotPagesPath, readHotPages, type HotPages } from '../../src/agent/hot-pages.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';
import { processTree } from '../../src/util/proc.js';

/** A process's environment, one VAR=value an entry. */
async function environ(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/environ`, 'latin1')).split('\0');
}

/**
 * The bug this guards: a checkpoint taken while a lazy restore's pages were
 * still arriving dumped the missing pages as never touched; a later restore
 * crashed the kernel, and Jupyter's restarter quietly replaced it (x was gone).
 * Dropping the page cache makes the lazy-pages daemon read from disk, so its
 * transfer is still under way when the next checkpoint starts.
 */
// At pre-dump, note every criu lazy-pages daemon still alive on this machine. At post-restore (memory filled, the
// lazy pages not yet served, nothing running), note how much of the restored server's memory is in huge pages.
// At pre-restore, note how many landing helpers (landing-memory.ts) of this process's agent still hold memory: none
// may, criu's fill is to get it.
const PRE_DUMP_WITNESS = (out: string): string => `#!/bin/sh
if [ "$CRTOOLS_SCRIPT_ACTION" = "pre-restore" ]; then
  n=0
  for d in /proc/[0-9]*; do
    [ "$(awk '/^PPid:/ { print $2 }' "$d/status" 2>/dev/null)" = "${process.pid}" ] || continue
    if tr '\\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q 'MADV_POPULATE_WRITE (Linux 5.14)'; then n=$((n+1)); fi
  done
  echo "$n" >> '${out}.landing'
  exit 0
fi
if [ "$CRTOOLS_SCRIPT_ACTION" = "post-restore" ]; then
  awk '/^AnonHugePages:/ { print $2 }' "/proc/$CRTOOLS_INIT_PID/smaps_rollup" >> '${out}.restore'
  exit 0
fi
[ "$CRTOOLS_SCRIPT_ACTION" = "pre-dump" ] || exit 0
n=0
for c in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' < "$c" 2>/dev/null | grep -q 'criu lazy-pages'; then n=$((n+1)); fi
done
echo "$n" >> '${out}'
exit 0
`;

describe('checkpoints right after lazy restores', () => {
  let t: TestAgent;
  const witness = join(tmpdir(), `hubshift-predump-${process.pid}`);
  beforeAll(async () => {
    await writeFile(`${witness}.sh`, PRE_DUMP_WITNESS(witness));
    await chmod(`${witness}.sh`, 0o755);
    await writeFile(witness, '');
    t = await startTestAgent({ criuActionScript: `${witness}.sh` });
  });
  afterAll(async () => {
    await t?.cleanup();
    await rm(witness, { force: true });
    await rm(`${witness}.sh`, { force: true });
    await rm(`${witness}.restore`, { force: true });
    await rm(`${witness}.landing`, { force: true });
  });

  async function witnessed(): Promise<number[]> {
    const text = (await readFile(witness, 'utf8')).trim();
    return text ? text.split('\n').map(Number) : [];
  }

  it('should hold a checkpoint until the memory of a lazy restore has all arrived', async () => {
    const s = await t.client.startSession('ivy');
    await kernelWithState(s.url, s.token, 16).then((k) => k.channel.close());
    await writeFile(witness, '');
    // A transfer in flight, held open by the test.
    let complete!: () => void;
    t.agent.ctx.lazy.track(s.id, new Promise<void>((r) => (complete = r)));
    expect((await t.client.getSession(s.id)).memoryArriving).toBe(true);
    let done = false;
    const pending = t.client.checkpoint(s.id).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 500));
    expect(done).toBe(false);
    expect(await t.client.progress(s.id)).toMatchObject({ step: 'waiting for memory from the last restore' });
    expect(await witnessed()).toEqual([]); // criu has not started
    complete();
    const c = await pending;
    expect(c.bytes).toBeGreaterThan(16 * 2 ** 20);
    expect(await witnessed()).toEqual([0]);
    await t.client.removeSession(s.id);
  });

  it('should track a lazy restore until its daemon has served every page, the server filled in huge pages before', async () => {
    const s = await t.client.startSession('jon');
    const k = await kernelWithState(s.url, s.token, 256);
    k.channel.close();
    // The server runs on glibc's malloc (its objects in memory advised into huge pages); its kernel on Python's own.
    const [server, kernel] = await processTree(t.agent.ctx.registry.get(s.id).pid as number);
    expect(await environ(server!)).toContain('PYTHONMALLOC=malloc');
    expect((await environ(kernel!)).filter((e) => e.startsWith('PYTHONMALLOC='))).toEqual([]);
    const c = await t.client.checkpoint(s.id);
    const tracked: Array<Promise<void>> = [];
    const track = t.agent.ctx.lazy.track.bind(t.agent.ctx.lazy);
    t.agent.ctx.lazy.track = (id, released) => {
      if (id === s.id) tracked.push(released);
      track(id, released);
    };
    // Memory warmed for the restore (landing-memory.ts): one helper, alive while the restore verifies.
    const landings: Array<{ hold: LandingHold; pid: number | undefined }> = [];
    const warm = t.agent.ctx.landing.warm.bind(t.agent.ctx.landing);
    t.agent.ctx.landing.warm = () => {
      const hold = warm();
      landings.push({ hold, pid: hold.pid });
      return hold;
    };
    try {
      await t.client.restore(c.checkpoint);
    } finally {
      t.agent.ctx.lazy.track = track;
      t.agent.ctx.landing.warm = warm;
    }
    expect(tracked).toHaveLength(1);
    // criu filled the server's memory in huge pages (hubshift's build), as the restore hook saw it before the
    // session ran (the agent collapses advised memory into huge pages itself, but only once all of it has arrived).
    const serverHuge = (await readFile(`${witness}.restore`, 'utf8')).trim().split('\n').map(Number);
    expect(serverHuge).toHaveLength(1);
    expect(serverHuge[0]).toBeGreaterThanOrEqual(20 * 1024);
    // It held memory, and had let go of it before criu restore started.
    expect(landings).toHaveLength(1);
    expect(landings[0]!.pid).toBeGreaterThan(0);
    expect(landings[0]!.hold.pid).toBeUndefined();
    expect((await readFile(`${witness}.landing`, 'utf8')).trim().split('\n').map(Number)).toEqual([0]);
    await tracked[0];
    expect((await t.client.getSession(s.id)).memoryArriving).toBe(false);
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    await t.client.removeSession(s.id);
  });

  it('should keep every byte across checkpoints taken right after lazy restores', async () => {
    const s = await t.client.startSession('kim');
    const k = await kernelWithState(s.url, s.token, 512);
    k.channel.close();
    let c = await t.client.checkpoint(s.id);
    // By round: the pages its restore's daemon was asked for by faults, and those recorded once it was done.
    const faulted: Map<number, number[]>[] = [];
    const recorded: HotPages[] = [];
    for (let round = 0; round < 3; round++) {
      const r = await t.client.restore(c.checkpoint);
      const ch = await KernelChannel.connect(r.url, r.token, k.kernelId);
      // Only x, and a page in every 512 KiB of the buffer's second half: touching all of it would pull every page
      // in and hide the race. Those pages fault whatever the load: the daemon's background copy goes up the address
      // space, and reaches them last (x's own pages, low in the heap, it often copies before the execute comes).
      const e = await ch.execute('x + 1', 30_000);
      const tail = await ch.execute('sum(blob[len(blob) // 2 + i * 2**19] for i in range(512)) >= 0', 30_000);
      ch.close();
      expect({ round, result: e.result, error: e.error, tail: tail.result }).toEqual({ round, result: '42', error: null, tail: 'True' });
      // The rest of the pages now come from the disk, if the transfer is still under way.
      await writeFile('/proc/sys/vm/drop_caches', '3\n');
      const restored = c.checkpoint;
      // The checkpoint waits until the daemon is done and the hot pages are recorded.
      c = await t.client.checkpoint(s.id);
      faulted.push(await faultsOf(restored));
      recorded.push(await readHotPages(hotPagesPath(t.config.dataDir, t.agent.ctx.registry.get(s.id))));
    }
    await t.client.restore(c.checkpoint);
    const ch = await KernelChannel.connect(s.url, s.token, k.kernelId);
    expect(await askState(ch)).toEqual({ answer: '42', hash: k.hash });
    ch.close();
    expect((await witnessed()).every((n) => n === 0)).toBe(true);
    // A restore's kernel faults on its heaps page by page (1 166-1 186 pages at the first here, alone; fewer when the
    // daemon's background copy gets there first, as on a loaded machine or since criu fills its buffer through
    // fill-through-buffer.patch: once none), and on the 512 buffer pages above; each checkpoint after a restore carries
    // those pages and the ones brought eagerly (hot-pages.json), and the next restore brings them all eagerly: of the
    // pages recorded after one restore, (almost) none fault in the next (without the file, most of them did).
    const pages = (h: HotPages | undefined): number => [...(h ?? new Map()).values()].reduce((n, p) => n + p.length, 0);
    const again = faulted.slice(1).map((f, i) => [...f].reduce((n, [pid, ps]) => n + ps.filter((p) => recorded[i]?.get(pid)?.includes(p)).length, 0));
    const before = recorded.slice(0, -1).map(pages);
    expect({ before, again, recordedEnough: before.some((n) => n > 100), fewAgain: again.every((n, i) => n <= (before[i] as number) / 10) }).toMatchObject({ recordedEnough: true, fewAgain: true });
  });

  /** The pages the lazy-pages daemon of the restore of `checkpoint` was asked for by faults, by pid (its -v4 log). */
  async function faultsOf(checkpoint: string): Promise<Map<number, number[]>> {
    const logs = join(t.config.dataDir, 'logs');
    const name = (await readdir(logs)).find((n) => n.startsWith(`${checkpoint}-lazy-pages-`));
    if (!name) throw new Error(`no lazy-pages log for the restore of ${checkpoint} in ${logs}`);
    return faultedPages(await readFile(join(logs, name), 'utf8'), Infinity);
  }
});
