import { createHash } from 'node:crypto';
import type { FileDigest } from '../../src/core/checkpoint.js';

/** sha256 of some bytes, in hex. */
export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A file's digest by definition: the sha256 of each slice of pieceBytes (an empty file, one of nothing). */
export function slices(b: Buffer, pieceBytes: number): FileDigest {
  const sha256: string[] = [];
  for (let at = 0; at < b.length; at += pieceBytes) sha256.push(sha(b.subarray(at, at + pieceBytes)));
  if (sha256.length === 0) sha256.push(sha(b));
  return { bytes: b.length, pieceBytes, sha256 };
}
