import { createHash, webcrypto, type Hash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import { pieceCount, type FileDigest, type StreamDigest } from '../core/checkpoint.js';
import { HashingHelperUnavailable, hashFileInHelper, type HashingHelpers } from './helper-hashing.js';
import { NativeHasherUnavailable, hashFileNatively } from './native-hashing.js';
import { pageAlignedBuffer } from '../util/aligned-buffer.js';

/**
 * Pieces hubshift hashes files in. Small enough that several are read and
 * hashed at once (16 MiB pieces verified 1.1 GiB in 0.5 s warm here, one
 * sha256 over the file 0.7 s), large enough that a manifest stays short (64
 * sha256s a GiB).
 */
export const PIECE_BYTES = 16 << 20;

/** Pieces up to this size are verified whole and in parallel; longer ones (format 1) front to back. */
const PARALLEL_PIECE_LIMIT = 64 << 20;
/** Pieces read and hashed at once: reads and sha256 both run on libuv's pool (4 threads). */
const LANES = 6;
/** Files from this size are hashed by the native piece hasher or a Python helper; below it starting either costs more than it saves. */
const HELPER_MIN_BYTES = 64 << 20;

/** One piece's running sum. */
interface PieceSum {
  update(bytes: Buffer): void;
  hex(): string;
}

const SUMS = {
  sha256: (): PieceSum => {
    const h: Hash = createHash('sha256');
    return { update: (b) => void h.update(b), hex: () => h.digest('hex') };
  },
  crc32: (): PieceSum => {
    let value = 0;
    return { update: (b) => void (value = crc32(b, value)), hex: () => value.toString(16).padStart(8, '0') };
  },
} as const;

/** The sum (sha256 or crc32) of each piece of a byte stream, fed in chunks of any size. */
class PieceSums {
  private sum: PieceSum;
  private inPiece = 0;
  private readonly done: string[] = [];
  bytes = 0;

  constructor(
    readonly pieceBytes: number,
    private readonly algorithm: keyof typeof SUMS,
  ) {
    this.sum = SUMS[algorithm]();
  }

  update(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(chunk.length - at, this.pieceBytes - this.inPiece);
      this.sum.update(take === chunk.length ? chunk : chunk.subarray(at, at + take));
      at += take;
      this.inPiece += take;
      if (this.inPiece === this.pieceBytes) {
        this.done.push(this.sum.hex());
        this.sum = SUMS[this.algorithm]();
        this.inPiece = 0;
      }
    }
    this.bytes += chunk.length;
  }

  /** Every piece's sum: the last, shorter piece's too, or the only one of an empty stream. */
  sums(): string[] {
    return this.inPiece > 0 || this.done.length === 0 ? [...this.done, this.sum.hex()] : [...this.done];
  }
}

/** sha256 of each piece of a byte stream, fed in chunks of any size. */
export class PieceHasher extends PieceSums {
  constructor(pieceBytes: number = PIECE_BYTES) {
    super(pieceBytes, 'sha256');
  }

  digest(): FileDigest {
    return { bytes: this.bytes, pieceBytes: this.pieceBytes, sha256: this.sums() };
  }
}

/** crc32 of each piece of a byte stream (a move stream's check: StreamDigest), fed in chunks of any size. */
export class PieceCrc32 extends PieceSums {
  constructor(pieceBytes: number) {
    super(pieceBytes, 'crc32');
  }

  digest(): StreamDigest {
    return { bytes: this.bytes, pieceBytes: this.pieceBytes, crc32: this.sums() };
  }
}

/** A pass-through that counts bytes and hashes them in pieces on the way. */
export class HashingStream extends Transform {
  private readonly hasher: PieceHasher;
  constructor(
    private readonly onBytes?: (n: number) => void,
    pieceBytes = PIECE_BYTES,
  ) {
    super();
    this.hasher = new PieceHasher(pieceBytes);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hasher.update(chunk);
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }
  digest(): FileDigest {
    return this.hasher.digest();
  }
}

/**
 * Hashes a file in pieces. Large files are hashed by the native piece hasher
 * (native-hashing.ts), or where it is not installed by a Python helper
 * (helper-hashing.ts), each piece read in small chunks that stay in the
 * CPU's cache, at about half the time of reading them here; the rest, or
 * all where neither can run, in-process.
 */
export async function hashFile(path: string, onBytes?: (n: number) => void, pieceBytes = PIECE_BYTES, helpers?: HashingHelpers): Promise<FileDigest> {
  if ((await stat(path)).size >= HELPER_MIN_BYTES) {
    try {
      return await hashFileNatively(path, pieceBytes, onBytes);
    } catch (err) {
      if (!(err instanceof NativeHasherUnavailable)) throw err;
    }
    try {
      return await hashFileInHelper(path, pieceBytes, onBytes, helpers);
    } catch (err) {
      if (!(err instanceof HashingHelperUnavailable)) throw err;
    }
  }
  return hashFileInProcess(path, onBytes, pieceBytes);
}

/**
 * Hashes a file in pieces in this process: several pieces read at once (parallel reads ran a
 * cold 1.1 GiB file in 0.55 s here, one front-to-back reader 1.0-1.4 s) and
 * hashed by WebCrypto, which runs off the main thread, so every core hashes.
 * Buffers are reused: fresh ones cost page faults.
 */
export async function hashFileInProcess(path: string, onBytes?: (n: number) => void, pieceBytes = PIECE_BYTES): Promise<FileDigest> {
  if (pieceBytes > PARALLEL_PIECE_LIMIT) return hashFileInOrder(path, pieceBytes, onBytes);
  const fh = await open(path, 'r');
  try {
    const bytes = (await fh.stat()).size;
    const count = pieceCount(bytes, pieceBytes);
    const sha256 = new Array<string>(count);
    let next = 0;
    let read = 0;
    const lane = async (buf: Buffer): Promise<void> => {
      for (let i = next++; i < count; i = next++) {
        const { bytesRead } = await fh.read(buf, 0, pieceBytes, i * pieceBytes);
        read += bytesRead;
        sha256[i] = Buffer.from(await webcrypto.subtle.digest('SHA-256', buf.subarray(0, bytesRead))).toString('hex');
        onBytes?.(bytesRead);
      }
    };
    const lanes = Math.min(LANES, count);
    await Promise.all(Array.from({ length: lanes }, () => lane(pageAlignedBuffer(pieceBytes))));
    // A file that changed size while read is reported by what was read.
    return { bytes: read, pieceBytes, sha256 };
  } finally {
    await fh.close();
  }
}

/** Pieces too long to hold in memory: one reader, hashing as it goes, reads kept in flight. */
async function hashFileInOrder(path: string, pieceBytes: number, onBytes?: (n: number) => void): Promise<FileDigest> {
  const CHUNK = 4 << 20;
  const DEPTH = 8;
  const fh = await open(path, 'r');
  try {
    const h = new PieceHasher(pieceBytes);
    const pool = Array.from({ length: DEPTH }, () => pageAlignedBuffer(CHUNK));
    let pos = 0;
    let issued = 0;
    const next = (): Promise<Buffer> => {
      const buf = pool[issued++ % DEPTH] as Buffer;
      const at = pos;
      pos += CHUNK;
      return fh.read(buf, 0, CHUNK, at).then((r) => buf.subarray(0, r.bytesRead));
    };
    // DEPTH - 1 reads ahead, so the buffer being hashed is never being read into.
    const inflight = Array.from({ length: DEPTH - 1 }, next);
    for (;;) {
      const chunk = await (inflight.shift() as Promise<Buffer>);
      if (chunk.length === 0) break;
      h.update(chunk);
      onBytes?.(chunk.length);
      inflight.push(next());
    }
    await Promise.allSettled(inflight);
    return h.digest();
  } finally {
    await fh.close();
  }
}

/**
 * Where `got` differs from what a manifest says (`want`), in words; undefined
 * when they agree. `got` must have been hashed with `want`'s piece size.
 */
export function digestMismatch(want: FileDigest, got: FileDigest): string | undefined {
  return sumsMismatch('sha256', { ...want, sums: want.sha256 }, { ...got, sums: got.sha256 });
}

/** digestMismatch for a move stream's crc32s. */
export function streamDigestMismatch(want: StreamDigest, got: StreamDigest): string | undefined {
  return sumsMismatch('crc32', { ...want, sums: want.crc32 }, { ...got, sums: got.crc32 });
}

type Sums = { bytes: number; pieceBytes: number; sums: string[] };

function sumsMismatch(algorithm: keyof typeof SUMS, want: Sums, got: Sums): string | undefined {
  if (got.bytes !== want.bytes) return `is ${got.bytes} bytes, the manifest says ${want.bytes} (truncated or altered)`;
  if (got.pieceBytes !== want.pieceBytes) return `was hashed in pieces of ${got.pieceBytes} bytes, the manifest's are ${want.pieceBytes}`;
  const at = want.sums.findIndex((s, i) => got.sums[i] !== s);
  if (at < 0) return undefined;
  const where = want.sums.length > 1 ? ` (bytes ${at * want.pieceBytes}..${Math.min(want.bytes, (at + 1) * want.pieceBytes)})` : '';
  return `does not match its ${algorithm} in the manifest${where} (altered or corrupt)`;
}
