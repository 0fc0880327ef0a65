import { z } from 'zod';

/**
 * How long hubshift's operations take, as linear models of the bytes moved,
 * fitted to this machine's benchmarks (README, Benchmarks; 2 vCPU VM, a disk
 * that writes about 1.2 GB/s and a link between local hosts). Image bytes
 * are the session's memory plus the server's and interpreter's own.
 */
export const OpTimings = z
  .object({
    /** Image bytes beyond the memory the kernels hold (376 MiB image for 256 MiB held). */
    imageOverheadBytes: z.number().nonnegative().default(125e6),
    /** Checkpoint to the store: 1 GiB took 1.24 s warm, 3.04 s right after filling; this sits near the slow end. */
    checkpointFixedSeconds: z.number().nonnegative().default(0.5),
    checkpointBytesPerSecond: z.number().positive().default(450e6),
    /** Restore to the first answered execute: 1.05-1.41 s for 256 MiB, 2.15-2.32 s for 1 GiB, 2.98-3.33 s for 2 GiB. */
    restoreFixedSeconds: z.number().nonnegative().default(0.7),
    restoreBytesPerSecond: z.number().positive().default(700e6),
    /** Stop-and-copy move, freeze to first execute on the target: 4.3-5.3 s, 10.7-19.6 s, 24-36 s for the three sizes. */
    migrateFixedSeconds: z.number().nonnegative().default(2),
    migrateBytesPerSecond: z.number().positive().default(90e6),
    /** A launched node until its agent answers (EC2 launch and boot; an assumption, not measured here). */
    nodeBootSeconds: z.number().nonnegative().default(90),
    /** Notice to reclaim for spot (AWS's two-minute warning). */
    spotNoticeSeconds: z.number().positive().default(120),
  })
  .strict();
export type OpTimings = z.infer<typeof OpTimings>;

export const DEFAULT_TIMINGS: OpTimings = OpTimings.parse({});

const imageBytes = (t: OpTimings, rss: number): number => rss + t.imageOverheadBytes;

export function checkpointSeconds(t: OpTimings, rss: number): number {
  return t.checkpointFixedSeconds + imageBytes(t, rss) / t.checkpointBytesPerSecond;
}

export function restoreSeconds(t: OpTimings, rss: number): number {
  return t.restoreFixedSeconds + imageBytes(t, rss) / t.restoreBytesPerSecond;
}

export function migrateSeconds(t: OpTimings, rss: number): number {
  return t.migrateFixedSeconds + imageBytes(t, rss) / t.migrateBytesPerSecond;
}
