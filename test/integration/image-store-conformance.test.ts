import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCheckpointId, type CheckpointManifest, type Session } from '../../src/core/index.js';
import { readCheckpoint } from '../../src/images/checkpoint-reader.js';
import { writeCheckpoint } from '../../src/images/checkpoint-writer.js';
import { DirImageStore } from '../../src/images/dir-store.js';
import type { ImageStore } from '../../src/images/image-store.js';
import { S3ImageStore, s3ClientFor } from '../../src/images/s3-store.js';
import { startS3, type TestS3 } from '../helpers/s3-server.js';

const session: Session = {
  id: 's0123abcd',
  user: 'alice',
  state: 'checkpointed',
  network: { ip: '10.9.0.2', prefixLength: 24, gateway: '10.9.0.1', mac: '02:00:00:00:00:01', hostVeth: 'hsv0123abcd', port: 8888 },
  token: 'x'.repeat(32),
  pid: null,
  home: '/home/alice',
  env: {},
  createdAt: new Date().toISOString(),
  updatedAt: new Date().toISOString(),
  lastCheckpoint: null,
  error: null,
};

interface Harness {
  name: string;
  setup(): Promise<ImageStore>;
  /** Removes just the manifest, as an interrupted checkpoint would leave things. */
  dropManifest(store: ImageStore, id: string): Promise<void>;
  /** Writes raw bytes in the manifest's place. */
  writeManifestText(store: ImageStore, id: string, text: string): Promise<void>;
  teardown(): Promise<void>;
}

let s3: TestS3;
const dirRoots: string[] = [];

const harnesses: Harness[] = [
  {
    name: 'directory store',
    async setup() {
      const root = await mkdtemp(join(tmpdir(), 'hubshift-store-'));
      dirRoots.push(root);
      return new DirImageStore(root);
    },
    async dropManifest(_store, id) {
      await unlink(join(dirRoots.at(-1)!, id, 'manifest.json'));
    },
    async writeManifestText(_store, id, text) {
      await writeFile(join(dirRoots.at(-1)!, id, 'manifest.json'), text);
    },
    async teardown() {
      for (const r of dirRoots) await rm(r, { recursive: true, force: true });
    },
  },
  {
    name: 'S3 store (s3rver on loopback)',
    async setup() {
      s3 = await startS3();
      return new S3ImageStore(s3ClientFor({ endpoint: s3.endpoint }), { bucket: s3.bucket, prefix: 'team/a' }, { partSize: 5 << 20 }).forUser('alice');
    },
    async dropManifest(_store, id) {
      await s3ClientFor({ endpoint: s3.endpoint }).send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: `team/a/users/alice/${id}/manifest.json` }));
    },
    async writeManifestText(_store, id, text) {
      await s3ClientFor({ endpoint: s3.endpoint }).send(new PutObjectCommand({ Bucket: s3.bucket, Key: `team/a/users/alice/${id}/manifest.json`, Body: text }));
    },
    async teardown() {
      await s3?.close();
    },
  },
];

/** A fake criu image directory: page images large enough for multipart, the rest small. */
async function makeImages(root: string): Promise<{ dir: string; side: string; files: Map<string, Buffer> }> {
  const dir = join(root, 'images');
  await mkdir(dir, { recursive: true });
  const files = new Map<string, Buffer>([
    ['inventory.img', randomBytes(100)],
    ['core-1.img', randomBytes(3000)],
    ['pagemap-1.img', randomBytes(500)],
    ['pages-1.img', randomBytes(12 << 20)],
    ['pages-2.img', randomBytes(1 << 20)],
  ]);
  for (const [n, b] of files) await writeFile(join(dir, n), b);
  const side = join(root, 'server.log');
  await writeFile(side, 'log line\n', { mode: 0o640 });
  return { dir, side, files };
}

async function commit(store: ImageStore, root: string, compression: 'none' | 'zstd' = 'none'): Promise<{ manifest: CheckpointManifest; files: Map<string, Buffer> }> {
  const { dir, side, files } = await makeImages(root);
  const id = newCheckpointId();
  const manifest = await writeCheckpoint({
    store,
    imagesDir: dir,
    sideFiles: [{ name: 'server.log', path: side }],
    compression,
    manifest: { id, sessionId: session.id, createdAt: new Date().toISOString(), criu: { version: '4.2.1', source: 'private' }, kernel: 'test', leaveRunning: false, dumpSeconds: 0.1, session },
  });
  return { manifest, files };
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe.each(harnesses)('$name', (h) => {
  let store: ImageStore;
  let work: string;
  beforeAll(async () => {
    store = await h.setup();
    work = await mkdtemp(join(tmpdir(), 'hubshift-conf-'));
  });
  afterAll(async () => {
    await h.teardown();
    await rm(work, { recursive: true, force: true });
  });

  it.each(['none', 'zstd'] as const)('should round-trip a checkpoint byte for byte (compression %s)', async (compression) => {
    const root = await mkdtemp(join(work, 'rt-'));
    const { manifest, files } = await commit(store, root, compression);
    expect(manifest.imageBytes).toBe([...files.values()].reduce((a, b) => a + b.length, 0));
    expect(manifest.blobs.map((b) => b.name.replace(/\.zst$/, ''))).toEqual(['images.tar', 'pages-1.img', 'pages-2.img']);
    const dest = join(root, 'restored');
    const read = await readCheckpoint({ store, checkpointId: manifest.id, destDir: dest });
    expect(read).toEqual(manifest);
    for (const [n, b] of files) expect((await readFile(join(dest, n))).equals(b)).toBe(true);
    expect(await readFile(join(dest, 'files', 'server.log'), 'utf8')).toBe('log line\n');
  });

  it('should list only committed checkpoints, and delete them', async () => {
    const root = await mkdtemp(join(work, 'ls-'));
    const { manifest } = await commit(store, root);
    expect(await store.list()).toContain(manifest.id);
    await h.dropManifest(store, manifest.id);
    expect(await store.list()).not.toContain(manifest.id);
    await store.delete(manifest.id);
    await expect(store.getManifest(manifest.id)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('should refuse a truncated blob before anything is restored', async () => {
    const root = await mkdtemp(join(work, 'trunc-'));
    const { manifest } = await commit(store, root);
    const whole = await readAll(await store.openBlob(manifest.id, 'pages-1.img'));
    await store.putBlob(manifest.id, 'pages-1.img', Readable.from([whole.subarray(0, whole.length - 4096)]));
    const dest = join(root, 'restored');
    await expect(readCheckpoint({ store, checkpointId: manifest.id, destDir: dest })).rejects.toMatchObject({
      code: 'integrity',
      message: expect.stringMatching(/blob pages-1\.img is \d+ bytes, the manifest says \d+/),
    });
    await expect(readdir(dest)).rejects.toThrow(); // nothing left for criu to run on
  });

  it('should refuse an altered blob of the same size', async () => {
    const root = await mkdtemp(join(work, 'alt-'));
    const { manifest } = await commit(store, root);
    const whole = await readAll(await store.openBlob(manifest.id, 'images.tar'));
    const mid = whole.length >> 1;
    whole.writeUInt8(whole.readUInt8(mid) ^ 0xff, mid);
    await store.putBlob(manifest.id, 'images.tar', Readable.from([whole]));
    await expect(readCheckpoint({ store, checkpointId: manifest.id, destDir: join(root, 'restored') })).rejects.toMatchObject({
      code: 'integrity',
      message: expect.stringContaining('does not match its sha256'),
    });
  });

  it('should name a missing blob', async () => {
    const root = await mkdtemp(join(work, 'miss-'));
    const { manifest } = await commit(store, root);
    const bogus: CheckpointManifest = { ...manifest, blobs: [...manifest.blobs, { name: 'pages-9.img', bytes: 1, pieceBytes: 1, sha256: ['0'.repeat(64)] }] };
    await store.putManifest(bogus);
    await expect(readCheckpoint({ store, checkpointId: manifest.id, destDir: join(root, 'restored') })).rejects.toMatchObject({
      code: 'integrity',
      message: expect.stringContaining('missing its blob pages-9.img'),
    });
  });

  it('should say that a checkpoint was deleted while it was being read, not that a blob is missing', async () => {
    const root = await mkdtemp(join(work, 'gone-'));
    const { manifest } = await commit(store, root);
    // The archive is always fetched through openBlob: the checkpoint is deleted (manifest first) right before.
    const racing: ImageStore = Object.create(store, {
      openBlob: {
        value: async (id: string, name: string) => {
          await store.delete(id);
          return store.openBlob(id, name);
        },
      },
    }) as ImageStore;
    const dest = join(root, 'restored');
    await expect(readCheckpoint({ store: racing, checkpointId: manifest.id, destDir: dest })).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringContaining(`checkpoint ${manifest.id} was deleted from ${store.location} while it was being restored`),
    });
    await expect(readdir(dest)).rejects.toThrow();
  });

  it('should tell an uncommitted checkpoint (no manifest) from an unknown one', async () => {
    const root = await mkdtemp(join(work, 'nomani-'));
    const { manifest } = await commit(store, root);
    await h.dropManifest(store, manifest.id);
    await expect(store.getManifest(manifest.id)).rejects.toMatchObject({ code: 'integrity', message: expect.stringContaining('never committed') });
    await expect(store.getManifest(newCheckpointId())).rejects.toMatchObject({ code: 'not_found' });
  });

  it('should refuse a manifest that fails validation, naming the field', async () => {
    const root = await mkdtemp(join(work, 'badmani-'));
    const { manifest } = await commit(store, root);
    await h.writeManifestText(store, manifest.id, JSON.stringify({ ...manifest, blobs: [{ name: 'pages-1.img', bytes: -1, sha256: 'zz' }] }));
    await expect(store.getManifest(manifest.id)).rejects.toMatchObject({ code: 'integrity', message: expect.stringContaining('blobs.0') });
    await h.writeManifestText(store, manifest.id, '{not json');
    await expect(store.getManifest(manifest.id)).rejects.toMatchObject({ code: 'integrity', message: expect.stringContaining('not valid JSON') });
  });

  it('should refuse ids and names that would leave the store', async () => {
    await expect(store.getManifest('../etc')).rejects.toMatchObject({ code: 'invalid_input' });
    await expect(store.openBlob(newCheckpointId(), '../manifest.json')).rejects.toMatchObject({ code: 'invalid_input' });
  });
});
