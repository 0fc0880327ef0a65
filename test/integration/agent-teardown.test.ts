import { readdir, readFile, rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/exec.js';
import { pathExists } from '../../src/util/fs.js';
import { isAlive } from '../../src/util/proc.js';
import { kernelWithState } from '../helpers/kernel.js';
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
});
