import { InputError } from '../core/errors.js';

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Joins key segments under a prefix, refusing any that could leave it: each
 * segment is a plain name (no slash, no . or .., nothing empty), checked
 * here, where keys are made, whatever checked it before.
 */
export function keyUnder(prefix: string, ...segments: string[]): string {
  for (const s of segments) {
    if (!SEGMENT.test(s) || s === '.' || s === '..' || s.includes('..')) {
      throw new InputError(`S3 key segment ${JSON.stringify(s)} is refused: it would leave the prefix ${JSON.stringify(prefix || '(bucket root)')} (segments are plain names: letters, digits, . _ -)`);
    }
  }
  return [prefix, ...segments].filter(Boolean).join('/');
}

/** Parallel streams and part size for multipart transfers on a link of `gbps` (about 90 MB/s per S3 connection). */
export function multipartPlan(gbps: number): { queueSize: number; partSize: number } {
  if (!(gbps > 0)) throw new InputError(`network bandwidth ${gbps} Gbit/s is not a positive number`);
  const perStream = 90e6;
  const queueSize = Math.min(64, Math.max(4, Math.ceil((gbps * 125e6) / perStream)));
  return { queueSize, partSize: 16 << 20 };
}
