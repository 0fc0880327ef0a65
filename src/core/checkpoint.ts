import { z } from 'zod';
import { Session } from './session.js';

export const CheckpointId = z.string().regex(/^c[0-9a-z]{6,40}$/, 'checkpoint id looks like c1a2b3c4d5e6f');
export const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** Names of blobs inside a checkpoint: plain file names, never paths. */
export const BlobName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'blob names are plain file names');

export const BlobEntry = z.object({
  name: BlobName,
  bytes: z.number().int().nonnegative(),
  sha256: Sha256,
});
export type BlobEntry = z.infer<typeof BlobEntry>;

export const Compression = z.enum(['none', 'zstd']);
export type Compression = z.infer<typeof Compression>;

/**
 * The manifest is written last: a checkpoint without one is not committed and
 * is never restored. It records every blob's size and sha256 so that a restore
 * verifies before it runs criu.
 */
export const CheckpointManifest = z.object({
  formatVersion: z.literal(1),
  id: CheckpointId,
  sessionId: z.string(),
  createdAt: z.string(),
  criu: z.object({ version: z.string(), source: z.string() }),
  kernel: z.string(),
  leaveRunning: z.boolean(),
  compression: Compression,
  /** Bytes of the criu image directory before packing. */
  imageBytes: z.number().int().nonnegative(),
  dumpSeconds: z.number().nonnegative(),
  blobs: z.array(BlobEntry).min(1),
  session: Session,
});
export type CheckpointManifest = z.infer<typeof CheckpointManifest>;

export const CheckpointResult = z.object({
  checkpoint: CheckpointId,
  bytes: z.number().int().nonnegative(),
  seconds: z.number().nonnegative(),
});
export type CheckpointResult = z.infer<typeof CheckpointResult>;
