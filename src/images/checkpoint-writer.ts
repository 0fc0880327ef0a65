import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobEntry, CheckpointManifest, Compression, FileDigest } from '../core/checkpoint.js';
import { IntegrityError } from '../core/errors.js';
import { HashingStream, hashFile } from './hashing.js';
import type { ImageStore } from './image-store.js';
import { packTar, type PackEntry } from './tar-pack.js';
import { zstdStream } from './zstd.js';
import { allSettledOrThrow } from '../util/settled.js';

/** The blob holding every criu image but the page data, and the session's side files. */
export const META_BLOB = 'images.tar';
/** Files outside the image directory that travel with a checkpoint sit under this folder in the archive. */
export const SIDE_FILES_DIR = 'files';

/** criu's page data images: the bulk of a checkpoint. */
export const PAGE_IMAGE = /^pages-\d+\.img$/;

/** A page image, or the file a page capture is writing it into (page-capture.ts): never part of the meta blob. */
const PAGE_DATA = /^pages-\d+\.img(\.data)?$/;

/** Where a checkpoint's blobs come from and go. */
interface CheckpointFiles {
  store: ImageStore;
  imagesDir: string;
  compression: Compression;
  signal?: AbortSignal;
}

export interface MetaBlobInput extends CheckpointFiles {
  /** The checkpoint's id. */
  id: string;
  /** Files a restore needs back in place (the server's log), stored under files/. */
  sideFiles: readonly PackEntry[];
}

export type WriteCheckpointInput = CheckpointFiles & {
  /** Digests of page images hashed while criu wrote them; any whose size disagrees is hashed again. */
  pageDigests?: ReadonlyMap<string, FileDigest>;
  manifest: Omit<CheckpointManifest, 'blobs' | 'imageBytes' | 'compression' | 'formatVersion'>;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
} & (
    | Pick<MetaBlobInput, 'sideFiles'>
    | {
        /** The meta blob, already being stored with its side files (storeMetaBlob). */
        metaBlob: Promise<BlobEntry>;
      }
  );

async function putStream(store: ImageStore, id: string, name: string, body: Readable, compression: Compression, signal?: AbortSignal): Promise<BlobEntry> {
  const hasher = new HashingStream();
  const stages = compression === 'zstd' ? [zstdStream('compress')] : [];
  // The store reads the hasher's output while the pipeline feeds it. A failing
  // stage destroys the hasher, which fails the store's read; a failing store
  // stops reading, so it must destroy the hasher to end the pipeline too.
  const feeding = pipeline([body, ...stages, hasher], { signal });
  try {
    await store.putBlob(id, name, hasher, signal);
  } catch (err) {
    hasher.destroy(err as Error);
    await feeding.catch(() => undefined);
    throw err;
  }
  await feeding;
  return { name, ...hasher.digest() };
}

/**
 * Stores the blob of every image in `imagesDir` but the page data, with the
 * side files, under checkpoint `id`. Needs only criu to have exited: a
 * checkpoint stores it while its page images are still being flushed.
 */
export async function storeMetaBlob(input: MetaBlobInput): Promise<BlobEntry> {
  const meta = (await readdir(input.imagesDir))
    .filter((n) => !PAGE_DATA.test(n))
    .sort()
    .map((n) => ({ name: n, path: join(input.imagesDir, n) }));
  const side = input.sideFiles.map((f) => ({ name: `${SIDE_FILES_DIR}/${f.name}`, path: f.path }));
  const suffix = input.compression === 'zstd' ? '.zst' : '';
  return putStream(input.store, input.id, `${META_BLOB}${suffix}`, packTar([...meta, ...side]), input.compression, input.signal);
}

/**
 * Stores a criu image directory as a checkpoint: the page images as blobs of
 * their own (streamed; linked instead of copied when the store is a directory
 * on the same filesystem), everything else packed into one tar, each blob's
 * size and sha256s recorded, and the manifest written last: the commit.
 */
export async function writeCheckpoint(input: WriteCheckpointInput): Promise<CheckpointManifest> {
  const { store, imagesDir, compression } = input;
  const id = input.manifest.id;
  const names = (await readdir(imagesDir)).sort();
  const sizes = new Map(await Promise.all(names.map(async (n) => [n, (await stat(join(imagesDir, n))).size] as const)));
  const imageBytes = [...sizes.values()].reduce((a, b) => a + b, 0);
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    input.onProgress?.(done, imageBytes);
  };
  const pages = names.filter((n) => PAGE_IMAGE.test(n));
  if (pages.length === 0) throw new IntegrityError(`criu wrote no page images in ${imagesDir}; the dump is incomplete`);
  const blobs: BlobEntry[] = [];
  const metaBlob = 'metaBlob' in input ? input.metaBlob : storeMetaBlob({ ...input, id });
  const suffix = compression === 'zstd' ? '.zst' : '';
  // An uncompressed page image is hashed (unless that was done during the dump) and the file itself handed to the
  // store; a compressed one is streamed through zstd.
  const putPage = async (n: string): Promise<BlobEntry> => {
    const path = join(imagesDir, n);
    if (compression !== 'none') {
      const src = createReadStream(path, { highWaterMark: 4 << 20 });
      src.on('data', (c) => progress((c as Buffer).length));
      return putStream(store, id, `${n}${suffix}`, src, compression, input.signal);
    }
    const early = input.pageDigests?.get(n);
    const digest = early && early.bytes === sizes.get(n) ? early : await hashFile(path, progress);
    if (digest === early) progress(digest.bytes);
    await store.putBlobFile(id, n, path, input.signal);
    return { name: n, ...digest };
  };
  // Into a local directory an uncompressed page image is a link: linked together with the small images, their
  // fsyncs share the filesystem's commits. Elsewhere one after another: an upload holds its parts in memory.
  // Every put is settled before a failure is thrown, so none lands after the caller has cleaned up.
  const together = compression === 'none' && store.localBlobPath(id, META_BLOB) !== null;
  blobs.push(...(await allSettledOrThrow([metaBlob, ...(together ? pages.map(putPage) : [])])));
  if (!together) for (const n of pages) blobs.push(await putPage(n));
  const manifest: CheckpointManifest = { ...input.manifest, formatVersion: 2, compression, imageBytes, blobs };
  await store.putManifest(manifest);
  return manifest;
}
