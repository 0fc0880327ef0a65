import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { CheckpointManifest } from '../core/checkpoint.js';
import { InputError, IntegrityError, NotFoundError, StoreError, errorMessage } from '../core/errors.js';
import { parseManifest } from './manifest.js';
import type { ImageStore } from './image-store.js';
import { safeBlobName, safeCheckpointId } from './names.js';

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
  /** Parts uploaded at once. Default 4. */
  queueSize?: number;
}

/** An S3 client for a store; an S3-compatible endpoint gets path-style addressing and checksums only when required. */
export function s3ClientFor(opts: { endpoint?: string; region?: string; forcePathStyle?: boolean }): S3Client {
  const config: S3ClientConfig = { region: opts.region ?? process.env.AWS_REGION ?? 'us-east-1' };
  if (opts.endpoint) {
    config.endpoint = opts.endpoint;
    config.forcePathStyle = opts.forcePathStyle ?? true;
    // S3-compatible servers mishandle the SDK's default streaming checksums;
    // the manifest's sha256 of every blob is checked on restore regardless.
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
 * Checkpoints in S3: PREFIX/<checkpoint>/blobs/<name> and
 * PREFIX/<checkpoint>/manifest.json. Blobs stream through multipart uploads,
 * never whole in memory.
 */
export class S3ImageStore implements ImageStore {
  readonly location: string;
  private readonly partSize: number;
  private readonly queueSize: number;

  constructor(
    private readonly client: S3Client,
    private readonly where: S3Location,
    opts: S3StoreOptions = {},
  ) {
    this.location = `s3://${where.bucket}${where.prefix ? `/${where.prefix}` : ''}`;
    this.partSize = opts.partSize ?? 16 << 20;
    this.queueSize = opts.queueSize ?? 4;
  }

  private key(id: string, rest: string): string {
    return [this.where.prefix, safeCheckpointId(id), rest].filter(Boolean).join('/');
  }

  private blobKey(id: string, name: string): string {
    return this.key(id, `blobs/${safeBlobName(name)}`);
  }

  async putBlob(id: string, name: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const Key = this.blobKey(id, name);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.where.bucket, Key, Body: body },
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
    const Key = this.blobKey(id, name);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.where.bucket, Key }));
      if (!(res.Body instanceof Readable)) throw new StoreError(`S3 returned no stream for blob ${name} of ${id}`);
      return res.Body;
    } catch (err) {
      if (isNoSuchKey(err)) throw new IntegrityError(`checkpoint ${id} is missing its blob ${name} in ${this.location}`);
      if (err instanceof StoreError) throw err;
      throw new StoreError(`reading blob ${name} of ${id} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  localBlobPath(): string | null {
    return null;
  }

  async putManifest(m: CheckpointManifest): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.where.bucket, Key: this.key(m.id, 'manifest.json'), Body: JSON.stringify(m, null, 2), ContentType: 'application/json' }),
      );
    } catch (err) {
      throw new StoreError(`writing the manifest of ${m.id} to ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  async getManifest(id: string): Promise<CheckpointManifest> {
    const Key = this.key(id, 'manifest.json');
    let text: string;
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.where.bucket, Key }));
      text = (await res.Body?.transformToString('utf8')) ?? '';
    } catch (err) {
      if (!isNoSuchKey(err)) throw new StoreError(`reading the manifest of ${id} from ${this.location} failed: ${errorMessage(err)}`, { cause: err });
      if ((await this.keysOf(id)).length > 0) {
        throw new IntegrityError(`checkpoint ${id} has no manifest in ${this.location}: it was never committed (an interrupted checkpoint); take a new one`);
      }
      throw new NotFoundError(`no checkpoint ${id} in ${this.location}`);
    }
    return parseManifest(id, text, this.location);
  }

  private async keysOf(id: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.where.bucket, Prefix: `${this.key(id, '')}/`, ContinuationToken: token }),
      );
      for (const o of res.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  async list(): Promise<string[]> {
    const ids: string[] = [];
    let token: string | undefined;
    const base = this.where.prefix ? `${this.where.prefix}/` : '';
    do {
      const res = await this.client.send(new ListObjectsV2Command({ Bucket: this.where.bucket, Prefix: base, ContinuationToken: token }));
      for (const o of res.Contents ?? []) {
        const m = o.Key?.slice(base.length).match(/^([^/]+)\/manifest\.json$/);
        if (m) ids.push(m[1]!);
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return ids.sort();
  }

  async delete(id: string): Promise<void> {
    const keys = await this.keysOf(id);
    // The manifest first, so a half-deleted checkpoint is never taken as committed.
    const manifestKey = this.key(id, 'manifest.json');
    const ordered = [...keys.filter((k) => k === manifestKey), ...keys.filter((k) => k !== manifestKey)];
    for (let i = 0; i < ordered.length; i += 1000) {
      const batch = ordered.slice(i, i + 1000);
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.where.bucket, Delete: { Objects: batch.map((Key) => ({ Key })) } }));
    }
  }
}
