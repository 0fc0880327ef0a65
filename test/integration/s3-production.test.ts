import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CopyObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCheckpointId, type Session } from '../../src/core/index.js';
import { readCheckpoint } from '../../src/images/checkpoint-reader.js';
import { writeCheckpoint } from '../../src/images/checkpoint-writer.js';
import { expireCheckpoints } from '../../src/images/retention.js';
import { keyUnder, multipartPlan } from '../../src/images/s3-keys.js';
import { S3ImageStore, s3ClientFor } from '../../src/images/s3-store.js';
import { startS3, type TestS3 } from '../helpers/s3-server.js';

let s3: TestS3;
let client: S3Client;
let work: string;
/** Every request the client sent: method, path, query and the headers that matter here. */
const sent: { method: string; path: string; query: Record<string, unknown>; headers: Record<string, string> }[] = [];

function session(user: string, id: string): Session {
  const now = new Date().toISOString();
  return {
    id,
    user,
    state: 'checkpointed',
    network: { ip: '10.9.0.2', prefixLength: 24, gateway: '10.9.0.1', mac: '02:00:00:00:00:01', hostVeth: `hsv${id.slice(1)}`, port: 8888 },
    token: 'x'.repeat(32),
    pid: null,
    home: `/home/${user}`,
    env: {},
    createdAt: now,
    updatedAt: now,
    lastCheckpoint: null,
    error: null,
  };
}

async function commit(store: S3ImageStore, s: Session, pagesBytes = 1 << 20, createdAt = new Date().toISOString()): Promise<{ id: string; pages: Buffer }> {
  const dir = await mkdtemp(join(work, 'img-'));
  const pages = randomBytes(pagesBytes);
  await writeFile(join(dir, 'inventory.img'), randomBytes(64));
  await writeFile(join(dir, 'pages-1.img'), pages);
  const id = newCheckpointId();
  await writeCheckpoint({
    store,
    imagesDir: dir,
    sideFiles: [],
    compression: 'none',
    manifest: { id, sessionId: s.id, createdAt, criu: { version: '4.2.1', source: 'test' }, kernel: 'test', leaveRunning: false, dumpSeconds: 0.1, session: s },
  });
  return { id, pages };
}

async function keys(prefix: string): Promise<string[]> {
  const r = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return (r.Contents ?? []).map((o) => o.Key!).sort();
}

beforeAll(async () => {
  s3 = await startS3();
  client = s3ClientFor({ endpoint: s3.endpoint });
  client.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { method: string; path: string; query: Record<string, unknown>; headers: Record<string, string> };
      sent.push({ method: req.method, path: req.path, query: { ...req.query }, headers: { ...req.headers } });
      return next(args);
    },
    { step: 'finalizeRequest', name: 'recordRequests' },
  );
  work = await mkdtemp(join(tmpdir(), 'hubshift-s3prod-'));
});
afterAll(async () => {
  await s3?.close();
  await rm(work, { recursive: true, force: true });
});

describe('S3 in production', () => {
  it('should encrypt every object with SSE-KMS under the configured key, multipart uploads included', async () => {
    sent.length = 0;
    const store = new S3ImageStore(client, { bucket: s3.bucket, prefix: 'kms' }, { partSize: 5 << 20, kmsKeyId: 'alias/hubshift-images' }).forUser('ann');
    await commit(store, session('ann', 's00000001'), 12 << 20);
    const writes = sent.filter((r) => (r.method === 'PUT' && !('partNumber' in r.query)) || (r.method === 'POST' && 'uploads' in r.query));
    // The page blob's multipart upload, the small blob, the index entry and the manifest.
    expect(writes.filter((r) => 'uploads' in r.query).length).toBeGreaterThanOrEqual(1);
    expect(writes.length).toBeGreaterThanOrEqual(4);
    for (const w of writes) {
      expect(w.headers['x-amz-server-side-encryption'], `${w.method} ${w.path}`).toBe('aws:kms');
      expect(w.headers['x-amz-server-side-encryption-aws-kms-key-id']).toBe('alias/hubshift-images');
    }
  });

  it("should key images by user, find them by id, and never read one user's through another's view", async () => {
    const root = new S3ImageStore(client, { bucket: s3.bucket, prefix: 'hub' });
    const ann = root.forUser('ann');
    const bob = root.forUser('bob');
    const a = await commit(ann, session('ann', 's0000000a'));
    const b = await commit(bob, session('bob', 's0000000b'));
    expect(await keys('hub/')).toEqual(
      [`hub/index/${a.id}.json`, `hub/index/${b.id}.json`, `hub/users/ann/${a.id}/blobs/images.tar`, `hub/users/ann/${a.id}/blobs/pages-1.img`, `hub/users/ann/${a.id}/manifest.json`, `hub/users/bob/${b.id}/blobs/images.tar`, `hub/users/bob/${b.id}/blobs/pages-1.img`, `hub/users/bob/${b.id}/manifest.json`].sort(),
    );
    expect(await ann.list()).toEqual([a.id]);
    expect(await root.list()).toEqual([a.id, b.id].sort());
    // By id through the whole store (an agent restoring a checkpoint it is given).
    const dest = join(work, 'restored-a');
    await readCheckpoint({ store: root, checkpointId: a.id, destDir: dest });
    expect((await readFile(join(dest, 'pages-1.img'))).equals(a.pages)).toBe(true);
    // Bob's view has no key of Ann's to read.
    await expect(bob.getManifest(a.id)).rejects.toThrow(/no checkpoint/);
    await expect(bob.openBlob(a.id, 'pages-1.img')).rejects.toThrow(/missing its blob/);
    // Ann's checkpoint copied under Bob's keys is refused: the manifest names its user.
    for (const k of await keys(`hub/users/ann/${a.id}/`)) {
      await client.send(new CopyObjectCommand({ Bucket: s3.bucket, CopySource: `${s3.bucket}/${k}`, Key: k.replace('/users/ann/', '/users/bob/') }));
    }
    await expect(bob.getManifest(a.id)).rejects.toThrow(/under bob's keys .* names user ann: refused/);
    await expect(bob.putManifest(await ann.getManifest(a.id))).rejects.toThrow(/is ann's and cannot be committed/);
  });

  it('should refuse keys that try to leave their prefix', async () => {
    const root = new S3ImageStore(client, { bucket: s3.bucket, prefix: 'hub' });
    expect(() => root.forUser('../bob')).toThrow(/user "..\/bob" cannot key checkpoints/);
    expect(() => keyUnder('hub', 'users', '..', 'x')).toThrow(/would leave the prefix "hub"/);
    expect(() => keyUnder('hub', 'users/../../etc')).toThrow(/would leave the prefix/);
    expect(() => keyUnder('hub', '')).toThrow(/would leave the prefix/);
    await expect(root.forUser('ann').putBlob('c../../x', 'pages-1.img', undefined as never)).rejects.toThrow(/checkpoint id .* is not valid/);
    await expect(root.forUser('ann').putBlob('cabcdef12', '../pages', undefined as never)).rejects.toThrow(/not a plain file name/);
    await expect(root.putBlob('cabcdef12', 'pages-1.img', undefined as never)).rejects.toThrow(/written per user: use the store's forUser/);
  });

  it('should keep the newest N checkpoints of a session and expire the rest, others untouched', async () => {
    const store = new S3ImageStore(client, { bucket: s3.bucket, prefix: 'ret' }).forUser('cy');
    const mine = session('cy', 's000000c1');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await commit(store, mine, 1024, new Date(Date.UTC(2026, 10, 24, 10, i)).toISOString())).id);
    const other = await commit(store, session('cy', 's000000c2'), 1024, new Date(Date.UTC(2026, 10, 1)).toISOString());
    const gone = await expireCheckpoints(store, mine.id, 2, () => false);
    expect(gone.sort()).toEqual(ids.slice(0, 3).sort());
    expect(await store.list()).toEqual([ids[3]!, ids[4]!, other.id].sort());
    // Nothing of an expired checkpoint is left, index included.
    for (const id of gone) expect((await keys('ret/')).filter((k) => k.includes(id))).toEqual([]);
    // A protected one stays even when it is old.
    expect(await expireCheckpoints(store, mine.id, 1, (id) => id === ids[3])).toEqual([]);
  });

  it('should fail a transfer whose connection goes silent, after the stall limit, instead of waiting for ever', async () => {
    // An endpoint that takes the connection and never answers: a stalled S3 connection, as a dead path looks.
    const held: Socket[] = [];
    const silent = createServer((c) => void held.push(c)).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      const endpoint = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const store = new S3ImageStore(s3ClientFor({ endpoint, stallMs: 300 }), { bucket: s3.bucket, prefix: 'stall' }).forUser('eve');
      const t0 = Date.now();
      await expect(commit(store, session('eve', 's000000e1'), 1024)).rejects.toThrow(/timed out after 300 ms of inactivity/);
      // The SDK's three attempts, each ended by the limit.
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(held.length).toBeGreaterThan(0);
    } finally {
      for (const c of held) c.destroy();
      silent.close();
    }
  });

  it('should read a blob as parallel ranged GETs, in order, and size parallelism to the link', async () => {
    const store = new S3ImageStore(client, { bucket: s3.bucket, prefix: 'par' }, { partSize: 5 << 20, queueSize: 3 }).forUser('dee');
    const c = await commit(store, session('dee', 's000000d1'), (17 << 20) + 123);
    sent.length = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of await store.openBlob(c.id, 'pages-1.img')) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(c.pages)).toBe(true);
    const ranges = sent.filter((r) => r.method === 'GET').map((r) => r.headers.range);
    expect(ranges).toEqual(['bytes=0-5242879', 'bytes=5242880-10485759', 'bytes=10485760-15728639', 'bytes=15728640-17825914']);
    expect(multipartPlan(10)).toEqual({ queueSize: 14, partSize: 16 << 20 });
    expect(multipartPlan(0.75).queueSize).toBe(4);
    expect(multipartPlan(100).queueSize).toBe(64);
  });
});
