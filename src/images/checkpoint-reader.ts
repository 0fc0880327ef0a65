import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BlobEntry, CheckpointManifest, FileDigest } from '../core/checkpoint.js';
import { IntegrityError } from '../core/errors.js';
import { META_BLOB } from './checkpoint-writer.js';
import { HashingStream, digestMismatch, hashFile } from './hashing.js';
import type { ImageStore } from './image-store.js';
import { unpackTar } from './tar-pack.js';
import { zstdStream } from './zstd.js';

export interface ReadCheckpointInput {
  store: ImageStore;
  checkpointId: string;
  /** Emptied, then filled with the criu image directory (side files under files/). */
  destDir: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
}

function check(id: string, blob: BlobEntry, got: FileDigest): void {
  const wrong = digestMismatch(blob, got);
  if (wrong) throw new IntegrityError(`checkpoint ${id}: blob ${blob.name} ${wrong}; it cannot be restored`);
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
  try {
    for (const blob of manifest.blobs) {
      const compressed = blob.name.endsWith('.zst');
      const plain = blob.name.replace(/\.zst$/, '');
      const local = store.localBlobPath(id, blob.name);
      if (local && !compressed && plain !== META_BLOB) {
        // A local store: verify the file where it is, then link it in (no copy).
        const got = await hashFile(local, progress, blob.pieceBytes).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') throw new IntegrityError(`checkpoint ${id} is missing its blob ${blob.name} in ${store.location}`);
          throw err;
        });
        check(id, blob, got);
        await link(local, join(destDir, plain)).catch(() => copyFile(local, join(destDir, plain)));
        continue;
      }
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
      }
    }
  } catch (err) {
    await rm(destDir, { recursive: true, force: true });
    throw err;
  }
  return manifest;
}
