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
    /**
     * Checkpoint to the store: 0.63-0.73 s for 256 MiB, 1.53-2.89 s for 1 GiB, 5.37-6.35 s for 2 GiB before the page
     * images went past the page cache (2026-11-30), near which this sits; 0.40-0.53, 0.80-0.84 and 1.21-1.37 s since.
     */
    checkpointFixedSeconds: z.number().nonnegative().default(0.5),
    checkpointBytesPerSecond: z.number().positive().default(400e6),
    /** Restore to the first answered execute: 0.78-0.82 s for 256 MiB, 1.15-1.43 s for 1 GiB, 1.75-1.79 s for 2 GiB. */
    restoreFixedSeconds: z.number().nonnegative().default(0.6),
    restoreBytesPerSecond: z.number().positive().default(1.4e9),
    /**
     * Stop-and-copy move (criu pushing the memory to the target), freeze to first execute: 1.12-1.15 s for 256 MiB,
     * 1.94-2.18 s for 1 GiB (up to 3.9 s on the first move after a kernel fills its memory), 3.41-7.63 s for 2 GiB.
     */
    migrateFixedSeconds: z.number().nonnegative().default(1),
    migrateBytesPerSecond: z.number().positive().default(400e6),
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
