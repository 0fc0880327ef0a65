import { resolve } from 'node:path';
import { DirImageStore } from './dir-store.js';
import type { ImageStore } from './image-store.js';
import { multipartPlan } from './s3-keys.js';

export interface StoreSpec {
  /** A directory path, dir:PATH, or s3://bucket/prefix. */
  url: string;
  /** An S3-compatible endpoint (tests, MinIO); unset for AWS itself. */
  s3Endpoint?: string;
  /** SSE-KMS key for S3 (id, ARN, alias/NAME or aws/s3). */
  kmsKeyId?: string;
  /** The node's network bandwidth, Gbit/s: sizes S3's parallel transfers (default 10). */
  networkGbps?: number;
}

/** The store a URL names. S3's SDK is loaded only for an S3 store: an agent with a directory starts without it. */
export async function openStore(spec: StoreSpec): Promise<ImageStore> {
  if (spec.url.startsWith('s3://')) {
    const { S3ImageStore, parseS3Url, s3ClientFor } = await import('./s3-store.js');
    return new S3ImageStore(s3ClientFor({ endpoint: spec.s3Endpoint }), parseS3Url(spec.url), { ...multipartPlan(spec.networkGbps ?? 10), kmsKeyId: spec.kmsKeyId });
  }
  return new DirImageStore(resolve(spec.url.replace(/^dir:/, '')));
}
