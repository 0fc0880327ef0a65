import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { criuExecutable } from '../../src/criu/binary.js';
import { waitFor } from '../../src/util/exec.js';
import { pathExists } from '../../src/util/fs.js';
import { isAlive } from '../../src/util/proc.js';
import { kernelWithState } from '../helpers/kernel.js';
import { lockedBytes } from '../helpers/session-processes.js';
import { startTestAgent } from '../helpers/test-agent.js';

/** Processes whose command line or environment names `dir`: an agent's criu, its sessions' servers and kernels. */
async function processesNaming(dir: string): Promise<number[]> {
  const found: number[] = [];
  for (const p of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const pid = Number(p);
    if (pid === process.pid) continue;
    const text = await Promise.all([readFile(`/proc/${p}/cmdline`, 'utf8'), readFile(`/proc/${p}/environ`, 'utf8')]).catch(() => ['', '']);
    if (text.some((t) => t.includes(dir))) found.push(pid);
  }
  return found;
}

describe("an agent torn down while an operation is under way (tests' and benches' cleanup)", () => {
  it('should leave no process nor file of a session whose restore had started', async () => {
    const t = await startTestAgent();
    let cleaned = false;
    try {
      const s = await t.client.startSession('tess');
      const k = await kernelWithState(s.url, s.token, 256);
      k.channel.close();
      const ck = await t.client.checkpoint(s.id);
      expect(await processesNaming(t.config.dataDir)).toEqual([]);
      // Torn down while the restore verifies the image, before criu runs: a sweep of sessions made then finds none to stop.
      // Its answer is cut by the teardown (or, had the restore been quicker, it ran and the sweep stopped it).
      const restoring = t.client.restore(ck.checkpoint).catch(() => undefined);
      await waitFor('the restore to start', async () => ((await t.client.getSession(s.id)).state === 'restoring' ? true : undefined), { timeoutMs: 10_000, intervalMs: 5 });
      await t.cleanup();
      cleaned = true;
      await restoring;
      // The agent is in this process: its restore, whatever the teardown did to it, has ended before anything is counted.
      await waitFor('the restore to end', async () => (t.agent.ctx.registry.progress(s.id) === null ? true : undefined), { timeoutMs: 60_000, intervalMs: 20 });
      const left = await processesNaming(t.config.dataDir);
      for (const pid of left) if (await isAlive(pid)) process.kill(pid, 'SIGKILL');
      expect(left).toEqual([]);
      // Nor its files: the restore, failing once the data was gone, wrote the session's record again.
      const kept = await pathExists(t.config.dataDir);
      await rm(t.config.dataDir, { recursive: true, force: true });
      expect(kept).toBe(false);
    } finally {
      if (!cleaned) await t.cleanup();
    }
  });

  it("should end a criu dump under way, the session's with it, and start no operation after", async () => {
    // An operator's script that holds criu inside the freeze, as anything holding a dump up: only the teardown ends
    // it (the agent's timeout for a dump is minutes, and a bench that exits takes it along).
    const dir = await mkdtemp(join(tmpdir(), 'hubshift-teardown-'));
    const script = join(dir, 'hold.sh');
    await writeFile(script, `#!/bin/sh\nif [ "$CRTOOLS_SCRIPT_ACTION" = post-dump ]; then : > ${dir}/held; sleep 120; fi\n`);
    await chmod(script, 0o755);
    const t = await startTestAgent({ criuActionScript: script });
    let cleaned = false;
    // criu, its script and the session, named by the agent's directory (their command lines or environments).
    let held: number[] = [];
    try {
      const s = await t.client.startSession('tess');
      const k = await kernelWithState(s.url, s.token, 16);
      k.channel.close();
      const checkpoint = t.client.checkpoint(s.id).then(
        () => 'answered',
        (err: Error) => err.message,
      );
      await waitFor('criu to reach post-dump', async () => ((await pathExists(join(dir, 'held'))) ? true : undefined), { timeoutMs: 30_000, intervalMs: 20 });
      held = await processesNaming(t.config.dataDir);
      expect(held.length).toBeGreaterThan(0);
      const t0 = performance.now();
      await t.cleanup();
      cleaned = true;
      const seconds = (performance.now() - t0) / 1000;
      expect(await checkpoint).not.toBe('answered');
      // Not the minute the teardown waits for an operation under way: the dump's criu was killed, its rollback ran.
      expect(seconds).toBeLessThan(20);
      expect(t.agent.ctx.registry.underWay).toBe(0);
      expect((await Promise.all(held.map(async (pid) => ((await isAlive(pid)) ? [pid] : [])))).flat()).toEqual([]);
      expect(await processesNaming(t.config.dataDir)).toEqual([]);
      // Torn down, the agent starts nothing more on a session.
      await expect(t.agent.ctx.registry.exclusive(s.id, 'checkpoint', async () => 'ran')).rejects.toThrow(/this agent is stopping/);
    } finally {
      if (!cleaned) await t.cleanup();
      for (const pid of new Set([...held, ...(await processesNaming(t.config.dataDir))])) if (await isAlive(pid)) process.kill(pid, 'SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("an agent's tools held in memory (resident-tools.ts)", () => {
  it('should lock criu and the commands beside it while it runs, and let them go when it stops', async () => {
    const t = await startTestAgent();
    let cleaned = false;
    try {
      const resident = await t.agent.ctx.residentTools;
      expect(resident?.report.errors).toEqual([]);
      const pid = resident?.pid as number;
      const locked = await lockedBytes(pid);
      // criu itself, its libraries, ip and nsenter: more than criu's executable alone.
      const criuBytes = (await stat(criuExecutable(t.agent.ctx.criu))).size;
      // Counted in whole pages, each file's last one included.
      expect(locked).toBeGreaterThanOrEqual(resident?.report.locked as number);
      expect(locked).toBeGreaterThan(criuBytes + (1 << 20));
      await t.cleanup();
      cleaned = true;
      await waitFor('the helper to end', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    } finally {
      if (!cleaned) await t.cleanup();
    }
  });
});

describe("an agent's criu started ahead of need (waiting-criu.ts)", () => {
  it('should keep criu waiting while it runs, use one for a checkpoint and one for its restore, and leave none when it stops', async () => {
    const t = await startTestAgent();
    let cleaned = false;
    try {
      const w = t.agent.ctx.waitingCriu;
      const ready = async (): Promise<number> => waitFor('a criu to wait', async () => w.waitingPids[0], { timeoutMs: 10_000, intervalMs: 20 });
      const first = await ready();
      const s = await t.client.startSession('waits');
      const ck = await t.client.checkpoint(s.id);
      // It ends only once it has been given its arguments (or killed): the checkpoint's dump ran in it.
      expect(await isAlive(first)).toBe(false);
      const second = await ready();
      await t.client.restore(ck.checkpoint);
      expect(await isAlive(second)).toBe(false);
      await ready();
      const left = w.waitingPids;
      await t.client.removeSession(s.id);
      await t.cleanup();
      cleaned = true;
      for (const pid of left) await waitFor('the waiting criu to end', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    } finally {
      if (!cleaned) await t.cleanup();
    }
  });
});
