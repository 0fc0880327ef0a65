import { KernelChannel } from '../../src/agent/kernel-channel.js';
import { askState, kernelWithState } from '../helpers/kernel.js';
import { startTestAgent } from '../helpers/test-agent.js';
import { dropCaches, measureDiskBest, measureDiskCold, measureDiskDirectWrite, measureDiskWrite, type DiskBaseline } from './disk-baseline.js';
import { measureFirstTouch, type MemoryBaseline } from './memory-baseline.js';
import { stopOnInterrupt } from './interrupt.js';
import { median } from './median.js';

export interface CheckpointRound {
  checkpointSeconds: number;
  imageBytes: number;
  /** The page-cache write baseline of the same bytes, taken right after this checkpoint (measureDiskWrite). */
  besideWriteSeconds: number;
  restoreSeconds: number;
  /** From the restore request to the first execute answered by the restored kernel. */
  firstExecuteSeconds: number;
}

export interface CheckpointFigures {
  sizeMiB: number;
  baseline: DiskBaseline;
  /** The same, into guest memory the VM has taken back (as a checkpoint's image usually lands). */
  coldBaseline: DiskBaseline;
  /** The disk's write past the page cache (O_DIRECT), how the checkpoint writes memory: bytes per second. */
  directWriteBytesPerSecond: number;
  /** The first checkpoint of a kernel that has just filled its memory, then the others, each followed by its restore. */
  rounds: CheckpointRound[];
  /** Of the best round (the fastest checkpoint). */
  checkpointThroughputRatio: number;
  /** Of the median round (the mean of the two middle ones for an even count). */
  checkpointThroughputRatioMedian: number;
  /** The median of each round's ratio to the write taken right after its checkpoint, not moved by drift over the run. */
  checkpointThroughputRatioBesideMedian: number;
  checkpointThroughputRatioCold: number;
  checkpointThroughputRatioDirect: number;
  restoreThroughputRatio: number;
  /**
   * The first touch of fresh memory right before the rounds and right after them (memory-baseline.ts): a restore
   * fills the server's memory at that rate before the server answers, and the daemon the rest.
   */
  firstTouch: { before: MemoryBaseline; after: MemoryBaseline };
}

/** Checkpoint and restore of a kernel holding `sizeMiB` of random bytes, `roundCount` times, with the disk baseline of the same bytes. */
export async function benchCheckpoint(sizeMiB: number, log: (m: string) => void, roundCount = 2): Promise<CheckpointFigures> {
  const t = await startTestAgent();
  const stop = stopOnInterrupt(() => t.cleanup());
  try {
    const s = await t.client.startSession('bench');
    log(`${sizeMiB} MiB: filling the kernel`);
    const k = await kernelWithState(s.url, s.token, sizeMiB);
    k.channel.close();
    const rounds: CheckpointRound[] = [];
    const touchBefore = await measureFirstTouch();
    for (let i = 0; i < roundCount; i++) {
      await dropCaches();
      log(`${sizeMiB} MiB: checkpoint ${i + 1}`);
      const ck = await t.client.checkpoint(s.id);
      const besideWriteSeconds = await measureDiskWrite(t.config.workDir, ck.bytes);
      await dropCaches();
      log(`${sizeMiB} MiB: restore ${i + 1}`);
      const t0 = performance.now();
      const r = await t.client.restore(ck.checkpoint);
      const ch = await KernelChannel.connect(r.url, r.token, k.kernelId);
      const state = await ch.execute('x + 1');
      const firstExecuteSeconds = (performance.now() - t0) / 1000;
      if (state.result !== '42') throw new Error(`restored kernel answered ${JSON.stringify(state)}`);
      const full = await askState(ch);
      if (full.hash !== k.hash) throw new Error('restored kernel holds different bytes');
      ch.close();
      rounds.push({ checkpointSeconds: ck.seconds, imageBytes: ck.bytes, besideWriteSeconds, restoreSeconds: r.seconds, firstExecuteSeconds });
    }
    const touchAfter = await measureFirstTouch();
    const bytes = rounds[0]!.imageBytes;
    log(`${sizeMiB} MiB: disk baseline`);
    const baseline = await measureDiskBest(t.config.workDir, bytes);
    log(`${sizeMiB} MiB: disk baseline in cold guest memory`);
    const coldBaseline = await measureDiskCold(t.config.workDir, bytes);
    log(`${sizeMiB} MiB: disk baseline past the page cache`);
    const directWriteBytesPerSecond = bytes / (await measureDiskDirectWrite(t.config.workDir, bytes));
    const best = rounds.reduce((a, b) => (b.checkpointSeconds < a.checkpointSeconds ? b : a));
    const bestRestore = rounds.reduce((a, b) => (b.restoreSeconds < a.restoreSeconds ? b : a));
    return {
      sizeMiB,
      baseline,
      coldBaseline,
      directWriteBytesPerSecond,
      rounds,
      checkpointThroughputRatio: best.imageBytes / best.checkpointSeconds / baseline.writeBytesPerSecond,
      checkpointThroughputRatioMedian: median(rounds.map((r) => r.imageBytes / r.checkpointSeconds)) / baseline.writeBytesPerSecond,
      checkpointThroughputRatioBesideMedian: median(rounds.map((r) => r.besideWriteSeconds / r.checkpointSeconds)),
      checkpointThroughputRatioCold: best.imageBytes / best.checkpointSeconds / coldBaseline.writeBytesPerSecond,
      checkpointThroughputRatioDirect: best.imageBytes / best.checkpointSeconds / directWriteBytesPerSecond,
      restoreThroughputRatio: bestRestore.imageBytes / bestRestore.restoreSeconds / baseline.readBytesPerSecond,
      firstTouch: { before: touchBefore, after: touchAfter },
    };
  } finally {
    await stop();
  }
}
