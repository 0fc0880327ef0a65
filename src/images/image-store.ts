import type { Readable } from 'node:stream';
import type { CheckpointManifest } from '../core/checkpoint.js';

/**
 * Where checkpoints live. A checkpoint is a set of named blobs plus a manifest
 * written last; a checkpoint without a manifest is not committed.
 *
 * Every implementation runs the same conformance suite
 * (test/integration/image-store-conformance.test.ts).
 *
 * Not in the contract: checksums (the checkpoint writer and reader compute and
 * verify them, so every store gets the same checks), encryption (the S3
 * store's SSE-KMS setting and the bucket's), and concurrent writers to one
 * checkpoint id (ids are unique per checkpoint).
 */
export interface ImageStore {
  /** A printable location, e.g. dir:/var/lib/hubshift/store or s3://bucket/prefix. */
  readonly location: string;

  /**
   * The view a user's checkpoints are written through. In S3 it keys every
   * object under the user and reads nothing of anyone else's; a local
   * directory (one node's own disk, owner-only files) is one view for all.
   */
  forUser(user: string): ImageStore;

  /** Writes a blob from a stream; the blob is visible only once complete. Throws StoreError. */
  putBlob(checkpointId: string, name: string, body: Readable, signal?: AbortSignal): Promise<void>;

  /**
   * Stores a blob from a local file. Stores on the same filesystem may link
   * the file instead of copying it; the caller must not change it afterwards.
   */
  putBlobFile(checkpointId: string, name: string, path: string, signal?: AbortSignal): Promise<void>;

  /** Opens a blob for reading. Throws IntegrityError when it is missing. */
  openBlob(checkpointId: string, name: string): Promise<Readable>;

  /** A local path to the blob's bytes when the store is a local directory, else null. */
  localBlobPath(checkpointId: string, name: string): string | null;

  /** Writes the manifest: the commit point. */
  putManifest(manifest: CheckpointManifest): Promise<void>;

  /**
   * Reads and validates a manifest. Throws NotFoundError when nothing of the
   * checkpoint exists, IntegrityError when blobs exist without a valid manifest.
   */
  getManifest(checkpointId: string): Promise<CheckpointManifest>;

  /** Ids of committed checkpoints (with a manifest), oldest first. */
  list(): Promise<string[]>;

  /** Removes a checkpoint and all its blobs; no error when it is already gone. */
  delete(checkpointId: string): Promise<void>;
}
