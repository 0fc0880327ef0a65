import { z } from 'zod';
import { Session } from './session.js';

export const CheckpointId = z.string().regex(/^c[0-9a-z]{6,40}$/, 'checkpoint id looks like c1a2b3c4d5e6f');
export const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** Names of blobs inside a checkpoint: plain file names, never paths. */
export const BlobName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'blob names are plain file names');

/**
 * How a file's bytes are checked: its size and the sha256 of each consecutive
 * piece of `pieceBytes` (the last piece may be shorter; an empty file has one
 * piece, the sha256 of nothing). Pieces rather than one sha256 over the whole
 * file, so that a restore reads and verifies them on every core at once.
 */
export const FileDigest = z.object({
  bytes: z.number().int().nonnegative(),
  pieceBytes: z.number().int().positive(),
  sha256: z.array(Sha256).min(1),
});
export type FileDigest = z.infer<typeof FileDigest>;

/** How many pieces a file of `bytes` has. */
export function pieceCount(bytes: number, pieceBytes: number): number {
  return Math.max(1, Math.ceil(bytes / pieceBytes));
}

/** A digest's check: one sum for each piece of pieceBytes (FileDigest's sha256s, StreamDigest's crc32s). */
const onePerPiece = (sums: string[], d: { bytes: number; pieceBytes: number }): boolean => sums.length === pieceCount(d.bytes, d.pieceBytes);
const onePerPieceError = (field: 'sha256' | 'crc32') => ({ message: `one ${field} for each piece of pieceBytes`, path: [field] });

/**
 * Format 1 manifests held one sha256 over the whole file: that is one piece as
 * long as the file, so they are still read (and restored).
 */
function wholeFileSha256AsOnePiece(v: unknown): unknown {
  if (typeof v !== 'object' || v === null || !('sha256' in v) || typeof v.sha256 !== 'string') return v;
  const bytes = 'bytes' in v && typeof v.bytes === 'number' && Number.isInteger(v.bytes) ? v.bytes : 1;
  return { ...v, pieceBytes: Math.max(1, bytes), sha256: [v.sha256] };
}

export const BlobEntry = z.preprocess(wholeFileSha256AsOnePiece, FileDigest.extend({ name: BlobName }).refine((d) => onePerPiece(d.sha256, d), onePerPieceError('sha256')));
export type BlobEntry = z.infer<typeof BlobEntry>;

export const Compression = z.enum(['none', 'zstd']);
export type Compression = z.infer<typeof Compression>;

/**
 * The manifest is written last: a checkpoint without one is not committed and
 * is never restored. It records every blob's size and sha256s so that a restore
 * verifies before it runs criu. Format 2 hashes blobs in pieces; format 1 (one
 * sha256 a blob) is still read.
 */
export const CheckpointManifest = z.object({
  formatVersion: z.union([z.literal(1), z.literal(2)]),
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
  /**
   * The session's network namespace was left out of the images (criu's
   * external namespace): the restore makes it again, from the session's
   * address and MAC, and criu restores the processes into it. Absent in
   * checkpoints from before: criu recreates the namespace it dumped.
   */
  netnsOutside: z.boolean().optional(),
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

/** Names of a session's files on the move: criu's images under images/ (a post-copy's pre-copied memory in images/parent/), side files under files/. */
export const MOVE_FILE_NAME = /^(images|images\/parent|files)\/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * How a move stream checks a file: its size and the crc32 of each piece
 * (eight hex digits), as FileDigest's sha256s. A move stream is checked
 * against corruption on its way, not against an attacker (its manifest
 * comes in the same stream, which the bearer token and the network guard);
 * crc32 (zlib's) goes at 6.9 GB/s here where sha256 goes at 2.0, and both
 * agents check every byte of a move on the move's critical path.
 */
export const StreamDigest = z.object({
  bytes: z.number().int().nonnegative(),
  pieceBytes: z.number().int().positive(),
  crc32: z.array(z.string().regex(/^[0-9a-f]{8}$/, 'a crc32 is 8 lowercase hex digits')).min(1),
});
export type StreamDigest = z.infer<typeof StreamDigest>;

/** A file of a session on the move. */
export const MoveFile = StreamDigest.extend({
  name: z.string().regex(MOVE_FILE_NAME, 'moved files are images/NAME, images/parent/NAME or files/NAME'),
  /** Permission bits: criu checks them on files a session held open. */
  mode: z.number().int().min(0).max(0o777),
}).refine((d) => onePerPiece(d.crc32, d), onePerPieceError('crc32'));
export type MoveFile = z.infer<typeof MoveFile>;

/** Where a post-copy move's source listens for the target on the move's bulk channel (images/bulk-channel.ts). */
export const BulkAt = z.object({ address: z.ipv4(), port: z.number().int().min(1).max(65_535), token: z.string().regex(/^[0-9a-f]{64}$/, 'is 32 bytes in hex') }).strict();
export type BulkAt = z.infer<typeof BulkAt>;

/**
 * What a source agent sends first when it streams a session to a target
 * agent, before the dump has ended: who is coming (so the target can refuse
 * at once) and the piece size the files are hashed in.
 */
export const MoveHeader = z.object({
  session: Session,
  pieceBytes: z.number().int().positive().max(1 << 30),
  /** Files besides the stream's (a post-copy move's memory) come on this channel; the manifest lists them all. */
  bulk: BulkAt.optional(),
});
export type MoveHeader = z.infer<typeof MoveHeader>;

/** Where a criu page server listens for one move's memory. */
export const PageServerAt = z.object({ address: z.ipv4(), port: z.number().int().min(1).max(65_535) }).strict();
export type PageServerAt = z.infer<typeof PageServerAt>;

/**
 * What a source agent sends last, once criu has written everything: every
 * file with its size and crc32s, so the target checks all it received
 * before criu runs there (as a restore from the store does).
 */
export const MoveManifest = z.object({
  formatVersion: z.literal(3),
  session: Session,
  criu: z.object({ version: z.string(), source: z.string() }),
  kernel: z.string(),
  dumpSeconds: z.number().nonnegative(),
  files: z.array(MoveFile).min(1).max(10_000),
  /**
   * Post-copy: the session's anonymous memory is not in the files; the
   * source's criu serves it here until the target has fetched all of it.
   */
  pageServer: PageServerAt.optional(),
  /**
   * Stop-and-copy: the session's memory is not in the files either; the
   * source's criu pushed it to a page server this agent opened for the move
   * (POST /v1/incoming/:id/pages), and it is complete once that server has
   * exited 0.
   */
  pagesPushed: z.boolean().optional(),
  /** The session's network namespace is not in the images: the target makes it (as CheckpointManifest's). */
  netnsOutside: z.boolean().optional(),
});
export type MoveManifest = z.infer<typeof MoveManifest>;

export const MoveMode = z.enum(['auto', 'stop-and-copy', 'post-copy']);
export type MoveMode = z.infer<typeof MoveMode>;

/** How a move went, as the source agent reports it. */
export const MoveResult = z.object({
  id: z.string(),
  url: z.string(),
  mode: MoveMode.exclude(['auto']),
  /** From the freeze on the source to the server answering on the target. */
  downtimeSeconds: z.number().nonnegative(),
  /**
   * When the source froze the session (ISO 8601, to the millisecond): a client
   * on a clock shared with the source (this machine, or synchronized) times
   * the downtime it sees, freeze to its own first answer. Post-copy: the
   * last moment the source saw the session's processes running before criu
   * had them all stopped (polled every 2 ms); otherwise criu's start.
   */
  frozenAt: z.string().datetime(),
  /** When the source started criu's dump (the session runs on until criu has stopped it, frozenAt). */
  dumpStartedAt: z.string().datetime(),
  seconds: z.number().nonnegative(),
  bytes: z.number().int().nonnegative(),
  /** Of `bytes`, those sent before the freeze (a post-copy's memory copied ahead); the rest went while it was frozen. */
  bytesAhead: z.number().int().nonnegative().default(0),
  target: z.string(),
});
export type MoveResult = z.infer<typeof MoveResult>;
