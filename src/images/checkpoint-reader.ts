import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BlobEntry, CheckpointManifest, FileDigest } from '../core/checkpoint.js';
import { IntegrityError, MissingBlobError, NotFoundError, UncommittedCheckpointError } from '../core/errors.js';
import { META_BLOB } from './checkpoint-writer.js';
import { HashingStream, digestMismatch, hashFile } from './hashing.js';
import type { HashingHelpers } from './helper-hashing.js';
import type { ImageStore } from './image-store.js';
import { unpackTar } from './tar-pack.js';
import { zstdStream } from './zstd.js';

export interface ReadCheckpointInput {
  store: ImageStore;
  checkpointId: string;
  /** Emptied, then filled with the criu image directory (side files under files/). */
  destDir: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Helpers started ahead of need for large blobs' verification (the agent's). */
  hashingHelpers?: HashingHelpers;
  /**
   * Started once every image but the page images is verified and in destDir,
   * while those may still be verified; awaited before this returns or fails.
   */
  onMetaReady?: () => Promise<unknown>;
  signal?: AbortSignal;
}

function check(id: string, blob: BlobEntry, got: FileDigest): void {
  const wrong = digestMismatch(blob, got);
  if (wrong) throw new IntegrityError(`checkpoint ${id}: blob ${blob.name} ${wrong}; it cannot be restored`);
}

async function verifyLocalBlob(id: string, location: string, blob: BlobEntry, path: string, dest: string, progress: (n: number) => void, helpers?: HashingHelpers): Promise<void> {
  const got = await hashFile(path, progress, blob.pieceBytes, helpers).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new MissingBlobError(id, blob.name, location);
    throw err;
  });
  check(id, blob, got);
  await link(path, dest).catch(() =>
    copyFile(path, dest).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new MissingBlobError(id, blob.name, location);
      throw err;
    }),
  );
}

/**
 * A read that failed because the checkpoint was deleted meanwhile (another
 * agent's retention on a shared store, or by hand) fails with whatever the
 * blobs' absence caused: a missing blob, an S3 404 mid-stream. Stores delete
 * the manifest first, so one that is gone now, having been read at the
 * start, says which it was.
 */
async function deletedMeanwhile(store: ImageStore, id: string, err: unknown): Promise<unknown> {
  const gone = await store.getManifest(id).then(
    () => false,
    (e: unknown) => e instanceof NotFoundError || e instanceof UncommittedCheckpointError,
  );
  if (!gone) return err;
  return new NotFoundError(`checkpoint ${id} was deleted from ${store.location} while it was being restored (another agent's retention, or by hand): restore one that is still there (hubshift checkpoints lists them)`);
}

/**
 * Fetches a checkpoint into a local image directory and verifies every blob's
 * size and sha256s against the manifest. Nothing is left in destDir unless all
 * of it verified, so criu never runs on a bad image.
 */
export async function readCheckpoint(input: ReadCheckpointInput): Promise<CheckpointManifest> {
  const { store, checkpointId: id, destDir } = input;
  const manifest = await store.getManifest(id);
  const total = manifest.blobs.reduce((a, b) => a + b.bytes, 0);
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    input.onProgress?.(done, total);
  };
  await rm(destDir, { recursive: true, force: true });
  await mkdir(destDir, { recursive: true, mode: 0o700 });
  const localPath = (b: BlobEntry): string | null => (b.name.endsWith('.zst') || b.name === META_BLOB ? null : store.localBlobPath(id, b.name));
  // A local store's page images are verified where they are and linked in
  // (no copy), all at once and while the rest is fetched: a session's small
  // page images and its image archive are done while its kernel's large one
  // is. Settled at once, so one failing early is no unhandled rejection.
  const local = Promise.allSettled(
    manifest.blobs.flatMap((b) => {
      const path = localPath(b);
      return path ? [verifyLocalBlob(id, store.location, b, path, join(destDir, b.name), progress, input.hashingHelpers)] : [];
    }),
  );
  let metaReady: Promise<unknown> = Promise.resolve();
  try {
    for (const blob of manifest.blobs.filter((b) => localPath(b) === null)) {
      const compressed = blob.name.endsWith('.zst');
      const plain = blob.name.replace(/\.zst$/, '');
      const hasher = new HashingStream(progress, blob.pieceBytes);
      // Written to a file and verified before anything parses it: an altered
      // archive is reported as altered, never fed to the tar parser.
      const target = join(destDir, plain === META_BLOB ? `.${META_BLOB}` : plain);
      const stages = compressed ? [zstdStream('decompress')] : [];
      await pipeline([await store.openBlob(id, blob.name), hasher, ...stages, createWriteStream(target, { mode: 0o600 })], { signal: input.signal });
      check(id, blob, hasher.digest());
      if (plain === META_BLOB) {
        await unpackTar(createReadStream(target), destDir);
        await rm(target);
        metaReady = Promise.resolve(input.onMetaReady?.()).catch(() => undefined);
      }
    }
    const failed = (await local).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    await metaReady;
    if (failed) throw failed.reason;
  } catch (err) {
    // Every verification settled first: none may link a file in after the directory is gone.
    await local;
    await metaReady;
    await rm(destDir, { recursive: true, force: true });
    throw input.signal?.aborted ? err : await deletedMeanwhile(store, id, err);
  }
  return manifest;
}
