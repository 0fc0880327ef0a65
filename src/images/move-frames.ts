import { createReadStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { StreamDigest } from '../core/checkpoint.js';
import { PieceCrc32 } from './hashing.js';

/**
 * The frames a move's files travel in, on the move stream and on its bulk
 * channel alike: a data frame (DATA, the file's name as u16 length and
 * bytes, a u32 byte count, the bytes) carries the next bytes of one file,
 * and files may interleave; END closes (the move stream's manifest follows it).
 */
export const DATA = 1;
export const END = 2;
/** What a FrameWriter's calls reject with, by default, once its output has closed. */
export const MOVE_STREAM_CLOSED = 'the move stream was closed';

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Frames written into `out`, each file summed in crc32 pieces as it goes.
 * Each call resolves once its bytes have been handed to the socket, so the
 * caller may then reuse its buffer; that is also the flow control. Once
 * `out` has closed (the reader went, or `abort`), every call rejects with
 * `closedMessage`.
 */
export class FrameWriter {
  private readonly gone: Promise<never>;
  /** Every file's crc32s, summed as its bytes are framed: what the manifest says of it. */
  private readonly sums = new Map<string, PieceCrc32>();

  constructor(
    private readonly out: Writable,
    private readonly pieceBytes: number,
    private readonly closedMessage = MOVE_STREAM_CLOSED,
  ) {
    this.gone = new Promise<never>((_resolve, reject) => {
      const closed = (): void => reject(new Error(closedMessage));
      out.once('close', closed);
      out.once('error', closed);
    });
    this.gone.catch(() => undefined);
  }

  protected write(buf: Buffer): Promise<void> {
    if (this.out.destroyed || this.out.writableEnded) return Promise.reject(new Error(this.closedMessage));
    const written = new Promise<void>((resolve, reject) => this.out.write(buf, (err) => (err ? reject(new Error(this.closedMessage)) : resolve())));
    // A callback that never comes (a request destroyed before its socket) must not hang the sender.
    return Promise.race([written, this.gone]);
  }

  /** A data frame's head for `chunk` of `name`, summing the chunk into the file's crc32s. */
  private frameHead(name: string, chunk: Buffer): Buffer {
    let sum = this.sums.get(name);
    if (!sum) this.sums.set(name, (sum = new PieceCrc32(this.pieceBytes)));
    sum.update(chunk);
    const n = Buffer.from(name);
    const head = Buffer.alloc(3);
    head.writeUInt8(DATA, 0);
    head.writeUInt16BE(n.length, 1);
    return Buffer.concat([head, n, u32(chunk.length)]);
  }

  /** The next bytes of `name`; resolves once they are handed on, when `chunk` may be reused. */
  data(name: string, chunk: Buffer): Promise<void> {
    const framed = this.write(this.frameHead(name, chunk));
    framed.catch(() => undefined);
    return Promise.all([framed, this.write(chunk)]).then(() => undefined);
  }

  /**
   * What has been framed of `name` so far (its size and crc32s in the
   * pieces), for the manifest; a file never framed is one of no bytes.
   */
  sent(name: string): StreamDigest {
    return (this.sums.get(name) ?? new PieceCrc32(this.pieceBytes)).digest();
  }

  /** A whole file, in 4 MiB frames: read from `path`, or its bytes as `source` yields them. */
  async file(name: string, source: string | AsyncIterable<Buffer>): Promise<StreamDigest> {
    for await (const chunk of typeof source === 'string' ? createReadStream(source, { highWaterMark: 4 << 20 }) : source) await this.data(name, chunk as Buffer);
    // An empty file still arrives (as no bytes).
    if (!this.sums.has(name)) await this.data(name, Buffer.alloc(0));
    return this.sent(name);
  }

  /**
   * Small files already read, queued at once in one write: each is one
   * frame. Written frame by frame, each became two HTTP chunks, which the
   * target's parser hands on one at a time (180 small chunks took 10 ms to
   * arrive in a plain node test here). A broken output shows at the next
   * awaited write (the end).
   */
  queueFiles(files: readonly { name: string; bytes: Buffer }[]): Map<string, StreamDigest> {
    if (files.length > 0) this.write(Buffer.concat(files.flatMap((f) => [this.frameHead(f.name, f.bytes), f.bytes]))).catch(() => undefined);
    return new Map(files.map((f) => [f.name, this.sent(f.name)]));
  }

  /** The END frame, then `trailer`; the output ends. */
  async endWith(trailer: Buffer): Promise<void> {
    await this.write(Buffer.concat([Buffer.from([END]), trailer]));
    this.out.end();
  }

  abort(err: Error): void {
    this.out.destroy(err);
  }
}
