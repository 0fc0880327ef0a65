import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { CheckpointManifest } from '../core/checkpoint.js';
import { InputError, IntegrityError, MissingBlobError, NotFoundError, StoreError, UncommittedCheckpointError, errorMessage } from '../core/errors.js';
import { parseManifest } from './manifest.js';
import type { ImageStore } from './image-store.js';
import { safeBlobName, safeCheckpointId } from './names.js';
import { keyUnder } from './s3-keys.js';
import { UserName } from '../core/session.js';
import { z } from 'zod';

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slash; may be empty. */
  prefix: string;
}

export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new InputError(`store ${JSON.stringify(url)} is not an S3 URL like s3://bucket/prefix`);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '..' || p === '.')) throw new InputError(`S3 prefix ${JSON.stringify(prefix)} may not contain . or .. segments`);
  return { bucket: m[1]!, prefix };
}

export interface S3StoreOptions {
  /** Multipart part size in bytes. Default 16 MiB. */
  partSize?: number;
  /** Parts moved at once, up and down. Default 4; multipartPlan() sizes it for a link. */
  queueSize?: number;
  /** Encrypt with SSE-KMS under this key (id, ARN or alias/NAME); 'aws/s3' for the AWS-managed key. Unset: the bucket's default. */
  kmsKeyId?: string;
}

/** Which user a checkpoint belongs to: written before its manifest, read to find it by id. */
const IndexEntry = z.object({ user: UserName }).strict();

/** How long an S3 connection may stay silent before its request fails (and the SDK retries it), ms. */
export const S3_STALL_MS = 30_000;

/**
 * An S3 client for a store; an S3-compatible endpoint gets path-style
 * addressing and checksums only when required. A connection that goes
 * silent fails after `stallMs` (the SDK's default waits for ever, and a
 * checkpoint with it: a session on a node the cloud is taking must not wait
 * on one stalled part), and one that does not connect after 5 s.
 */
export function s3ClientFor(opts: { endpoint?: string; region?: string; forcePathStyle?: boolean; stallMs?: number }): S3Client {
  const config: S3ClientConfig = {
    region: opts.region ?? process.env.AWS_REGION ?? 'us-east-1',
    requestHandler: { connectionTimeout: 5_000, socketTimeout: opts.stallMs ?? S3_STALL_MS },
  };
  if (opts.endpoint) {
    config.endpoint = opts.endpoint;
    config.forcePathStyle = opts.forcePathStyle ?? true;
    // S3-compatible servers mishandle the SDK's default streaming checksums;
    // the manifest's sha256s of every blob are checked on restore regardless.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
  }
  return new S3Client(config);
}

function isNoSuchKey(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === 'NoSuchKey' || name === 'NotFound' || (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;
}

/**
 * Checkpoints in S3, keyed by user: PREFIX/users/<user>/<checkpoint>/blobs/<name>
 * and .../manifest.json, plus PREFIX/index/<checkpoint>.json naming the user so
 * a checkpoint can be found by id alone. Writes go through forUser(); a
 * user's view reads only under that user's keys and refuses a manifest of
 * anyone else's, so one user's images are never read through another's
 * session. Blobs stream through multipart uploads and parallel ranged reads,
 * never whole in memory.
 */
export class S3ImageStore implements ImageStore {
  readonly location: string;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly users = new Map<string, string>();

  constructor(
    private readonly client: S3Client,
    private readonly where: S3Location,
    private readonly opts: S3StoreOptions = {},
    /** The user this view is for; null for the whole store (reads by id, no writes). */
    readonly user: string | null = null,
  ) {
    this.location = `s3://${where.bucket}${where.prefix ? `/${where.prefix}` : ''}${user ? ` (user ${user})` : ''}`;
    this.partSize = opts.partSize ?? 16 << 20;
    this.queueSize = opts.queueSize ?? 4;
  }

  forUser(user: string): S3ImageStore {
    const r = UserName.safeParse(user);
    if (!r.success) throw new InputError(`user ${JSON.stringify(user)} cannot key checkpoints: ${r.error.issues[0]?.message}`);
    return new S3ImageStore(this.client, this.where, this.opts, user);
  }

  private get sse(): { ServerSideEncryption?: 'aws:kms'; SSEKMSKeyId?: string } {
    const k = this.opts.kmsKeyId;
    if (!k) return {};
    return k === 'aws/s3' ? { ServerSideEncryption: 'aws:kms' } : { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: k };
  }

  private indexKey(id: string): string {
    return keyUnder(this.where.prefix, 'index', `${safeCheckpointId(id)}.json`);
  }

  /** The user's view a checkpoint lives in: this one, or (for the whole store) the one its index names. */
  private async owner(id: string): Promise<S3ImageStore> {
    if (this.user) return this;
    let user = this.users.get(id);
    if (!user) {
      let text: string;
      try {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.where.bucket, Key: this.indexKey(id) }));
        text = (await res.Body?.transformToString('utf8')) ?? '';
      } catch (err) {
        if (isNoSuchKey(err)) throw new NotFoundError(`no checkpoint ${id} in ${this.location}`);
        throw new StoreError(`reading the index entry of ${id} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
      }
      const r = IndexEntry.safeParse(JSON.parse(text));
      if (!r.success) throw new IntegrityError(`the index entry of checkpoint ${id} in ${this.location} is malformed; the checkpoint cannot be placed`);
      user = r.data.user;
      this.users.set(id, user);
    }
    return this.forUser(user);
  }

  private key(id: string, ...rest: string[]): string {
    if (!this.user) throw new InputError(`checkpoints are written per user: use the store's forUser(name) view (${this.location})`);
    return keyUnder(this.where.prefix, 'users', this.user, safeCheckpointId(id), ...rest);
  }

  private blobKey(id: string, name: string): string {
    return this.key(id, 'blobs', safeBlobName(name));
  }

  async putBlob(id: string, name: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const Key = this.blobKey(id, name);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.where.bucket, Key, Body: body, ...this.sse },
      partSize: this.partSize,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    });
    const onAbort = (): void => void upload.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } catch (err) {
      throw new StoreError(`uploading blob ${name} of ${id} to ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  putBlobFile(id: string, name: string, path: string, signal?: AbortSignal): Promise<void> {
    return this.putBlob(id, name, createReadStream(path, { highWaterMark: 4 << 20 }), signal);
  }

  async openBlob(id: string, name: string): Promise<Readable> {
    const self = await this.owner(id);
    const Key = self.blobKey(id, name);
    let size: number;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.where.bucket, Key }));
      size = head.ContentLength ?? 0;
    } catch (err) {
      if (isNoSuchKey(err)) throw new MissingBlobError(id, name, this.location);
      throw new StoreError(`reading blob ${name} of ${id} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
    return Readable.from(this.ranges(Key, size, `blob ${name} of ${id}`), { objectMode: false });
  }

  /**
   * The object's bytes in order, fetched as ranged GETs with up to queueSize
   * in flight: at most queueSize parts are held in memory at once.
   */
  private async *ranges(Key: string, size: number, what: string): AsyncGenerator<Buffer> {
    const get = async (start: number): Promise<Buffer> => {
      const end = Math.min(size, start + this.partSize) - 1;
      try {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.where.bucket, Key, Range: `bytes=${start}-${end}` }));
        const bytes = Buffer.from((await res.Body?.transformToByteArray()) ?? []);
        if (bytes.length !== end - start + 1) throw new Error(`range ${start}-${end} came back with ${bytes.length} bytes`);
        return bytes;
      } catch (err) {
        throw new StoreError(`reading ${what} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
      }
    };
    const inFlight: Promise<Buffer>[] = [];
    let next = 0;
    const fill = (): void => {
      while (inFlight.length < this.queueSize && next < size) {
        const p = get(next);
        // Failures surface when the part's turn comes; until then they must not go unhandled.
        p.catch(() => undefined);
        inFlight.push(p);
        next += this.partSize;
      }
    };
    fill();
    while (inFlight.length > 0) {
      const part = await inFlight.shift()!;
      fill();
      yield part;
    }
  }

  localBlobPath(): string | null {
    return null;
  }

  async putManifest(m: CheckpointManifest): Promise<void> {
    if (m.session.user !== this.user) throw new InputError(`checkpoint ${m.id} is ${m.session.user}'s and cannot be committed in ${this.location}`);
    try {
      // The index first: a committed checkpoint can always be found by id.
      await this.client.send(new PutObjectCommand({ Bucket: this.where.bucket, Key: this.indexKey(m.id), Body: JSON.stringify({ user: this.user }), ContentType: 'application/json', ...this.sse }));
      await this.client.send(new PutObjectCommand({ Bucket: this.where.bucket, Key: this.key(m.id, 'manifest.json'), Body: JSON.stringify(m, null, 2), ContentType: 'application/json', ...this.sse }));
    } catch (err) {
      throw new StoreError(`writing the manifest of ${m.id} to ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  async getManifest(id: string): Promise<CheckpointManifest> {
    const self = await this.owner(id);
    const Key = self.key(id, 'manifest.json');
    let text: string;
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.where.bucket, Key }));
      text = (await res.Body?.transformToString('utf8')) ?? '';
    } catch (err) {
      if (!isNoSuchKey(err)) throw new StoreError(`reading the manifest of ${id} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
      if ((await self.keysOf(id)).length > 0) {
        throw new UncommittedCheckpointError(id, this.location);
      }
      throw new NotFoundError(`no checkpoint ${id} in ${this.location}`);
    }
    const m = parseManifest(id, text, this.location);
    if (m.session.user !== self.user) throw new IntegrityError(`checkpoint ${id} under ${self.user}'s keys in ${this.location} names user ${m.session.user}: refused (was it copied there?)`);
    return m;
  }

  private async listKeys(Prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.client.send(new ListObjectsV2Command({ Bucket: this.where.bucket, Prefix, ContinuationToken: token }));
      for (const o of res.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  private keysOf(id: string): Promise<string[]> {
    return this.listKeys(`${this.key(id)}/`);
  }

  /** Committed checkpoints: this user's (a user's view), or everyone's (the whole store). */
  async list(): Promise<string[]> {
    const base = this.user ? `${keyUnder(this.where.prefix, 'users', this.user)}/` : `${keyUnder(this.where.prefix, 'users')}/`;
    const ids: string[] = [];
    for (const k of await this.listKeys(base)) {
      const m = k.slice(base.length).match(this.user ? /^([^/]+)\/manifest\.json$/ : /^[^/]+\/([^/]+)\/manifest\.json$/);
      if (m) ids.push(m[1]!);
    }
    return ids.sort();
  }

  async delete(id: string): Promise<void> {
    let self: S3ImageStore;
    try {
      self = await this.owner(id);
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
    const keys = await self.keysOf(id);
    // The manifest first, so a half-deleted checkpoint is never taken as committed; the index last.
    const manifestKey = self.key(id, 'manifest.json');
    const ordered = [...keys.filter((k) => k === manifestKey), ...keys.filter((k) => k !== manifestKey), this.indexKey(id)];
    for (let i = 0; i < ordered.length; i += 1000) {
      const batch = ordered.slice(i, i + 1000);
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.where.bucket, Delete: { Objects: batch.map((Key) => ({ Key })) } }));
    }
    this.users.delete(id);
  }
}
