import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** A pass-through that counts bytes and computes their sha256 on the way. */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }
  digest(): { bytes: number; sha256: string } {
    return { bytes: this.bytes, sha256: this.hash.digest('hex') };
  }
}

export async function hashFile(path: string, onBytes?: (n: number) => void): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  await pipeline(createReadStream(path, { highWaterMark: 4 << 20 }), async function (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      h.update(chunk);
      bytes += chunk.length;
      onBytes?.(chunk.length);
    }
  });
  return { bytes, sha256: h.digest('hex') };
}
