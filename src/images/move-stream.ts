import { chmodSync, closeSync, mkdirSync, openSync, writev } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { Writable } from 'node:stream';
import { MOVE_FILE_NAME, MoveHeader, MoveManifest, type StreamDigest } from '../core/checkpoint.js';
import { IntegrityError, describeZodIssue } from '../core/errors.js';
import { receiveBulk } from './bulk-channel.js';
import { DATA, END, FrameWriter, u32 } from './move-frames.js';
import { writeAt, writeAtSync } from '../util/fs.js';
import { PieceCrc32, streamDigestMismatch } from './hashing.js';

export { MOVE_STREAM_CLOSED } from './move-frames.js';

/**
 * The move stream, hubshift's own framing (both ends are hubshift): a magic,
 * a header (the session and the piece size), then frames. A data frame
 * carries the next bytes of one file; files may interleave, since page images
 * are sent while criu is still writing them. The end frame carries the
 * manifest, every file's size and crc32s (StreamDigest), known only once
 * criu is done; the target checks everything it received against it before
 * criu runs there. Version 03: crc32s where 02 had sha256s, and the session's
 * network namespace left out of the images (MoveManifest.netnsOutside);
 * 04: files may come on a bulk channel beside the stream (MoveHeader.bulk);
 * 05: a post-copy's memory copied ahead comes as a parent image (images/parent/).
 */
const MAGIC = Buffer.from('HSMOVE05');
const MAX_JSON_BYTES = 4 << 20;
/** What a move stream is sent as. */
export const MOVE_CONTENT_TYPE = 'application/x-hubshift-move';
const MAX_FILES = 10_000;
/** The receiving side writes in runs of this many bytes, this many at once. */
const WRITE_BYTES = 4 << 20;
const WRITES_IN_FLIGHT = 4;
/**
 * Runs up to this size are written at once, synchronously (criu's small images, most of a move's files after the
 * freeze: through the thread pool, with an open and a chmod each, a hundred of them took 25-75 ms of it here).
 */
const SYNC_WRITE_BYTES = 256 << 10;
const writevAsync = promisify(writev);

/**
 * The sending half: the magic and the header, then frames written into `out`
 * (an HTTP request's body; see FrameWriter), then the manifest.
 */
export class MoveStreamWriter extends FrameWriter {
  constructor(out: Writable, header: MoveHeader) {
    super(out, header.pieceBytes);
    const json = Buffer.from(JSON.stringify(header));
    this.write(Buffer.concat([MAGIC, u32(json.length), json])).catch(() => undefined);
  }

  async end(manifest: MoveManifest): Promise<void> {
    const json = Buffer.from(JSON.stringify(manifest));
    await this.endWith(Buffer.concat([u32(json.length), json]));
  }
}

/** Takes exact byte counts off an async stream of chunks, without copying where it can. */
class ByteReader {
  private pending: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer | string>;
  private readonly failed: Promise<never>;
  /** Makes the current and every later read throw `err` (something beside the stream failed). */
  readonly fail: (err: Error) => void;
  constructor(source: AsyncIterable<Buffer | string>) {
    this.it = source[Symbol.asyncIterator]();
    let fail!: (err: Error) => void;
    this.failed = new Promise<never>((_resolve, reject) => (fail = reject));
    this.failed.catch(() => undefined);
    this.fail = fail;
  }
  async more(): Promise<boolean> {
    const r = await Promise.race([this.it.next(), this.failed]);
    if (r.done) return false;
    const c = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    this.pending = this.pending.length ? Buffer.concat([this.pending, c]) : c;
    return true;
  }
  async take(n: number, what: string): Promise<Buffer> {
    while (this.pending.length < n) if (!(await this.more())) throw new IntegrityError(`move stream ended inside ${what}`);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }
  /** Up to `n` bytes, as they come: at least one unless the stream ended. */
  async upTo(n: number): Promise<Buffer> {
    if (this.pending.length === 0 && !(await this.more())) return Buffer.alloc(0);
    const out = this.pending.subarray(0, Math.min(n, this.pending.length));
    this.pending = this.pending.subarray(out.length);
    return out;
  }
  async atEnd(): Promise<boolean> {
    return this.pending.length === 0 && !(await this.more());
  }
}

async function readJson(r: ByteReader, what: string): Promise<unknown> {
  const len = (await r.take(4, what)).readUInt32BE(0);
  if (len > MAX_JSON_BYTES) throw new IntegrityError(`move ${what} of ${len} bytes is larger than allowed`);
  const text = (await r.take(len, what)).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new IntegrityError(`move ${what} is not JSON`);
  }
}

/** Bounds the writes in flight during a receive; the first failure is kept and rethrown. */
class Writes {
  private readonly running = new Set<Promise<void>>();
  private failure: unknown;
  async add(write: Promise<void>): Promise<void> {
    const tracked: Promise<void> = write.then(
      () => undefined,
      (err: unknown) => {
        this.failure ??= err;
      },
    );
    this.running.add(tracked);
    void tracked.finally(() => this.running.delete(tracked));
    while (this.running.size > WRITES_IN_FLIGHT) await Promise.race(this.running);
    this.check();
  }
  async drain(): Promise<void> {
    await Promise.all([...this.running]);
    this.check();
  }
  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

async function writeAll(fd: number, parts: Buffer[], position: number): Promise<void> {
  const total = parts.reduce((a, b) => a + b.length, 0);
  const { bytesWritten } = await writevAsync(fd, parts, position);
  if (bytesWritten === total) return;
  // A short write (rare on a regular file): the rest, plainly.
  const rest = Buffer.concat(parts).subarray(bytesWritten);
  await writeAt(fd, rest, rest.length, position + bytesWritten);
}

/**
 * One received file: summed in pieces as the bytes come; the chunks off the
 * socket are written as they are (no copy), gathered into large writes.
 */
class ReceivedFile {
  private parts: Buffer[] = [];
  private partBytes = 0;
  private offset = 0;
  private readonly hash: PieceCrc32;

  constructor(
    readonly fd: number,
    pieceBytes: number,
    private readonly writes: Writes,
  ) {
    this.hash = new PieceCrc32(pieceBytes);
  }

  async write(chunk: Buffer): Promise<void> {
    this.hash.update(chunk);
    this.parts.push(chunk);
    this.partBytes += chunk.length;
    if (this.partBytes >= WRITE_BYTES) await this.flush();
  }

  /** Writes what is gathered. */
  async flush(): Promise<void> {
    if (this.partBytes === 0) return;
    const parts = this.parts;
    const position = this.offset;
    this.offset += this.partBytes;
    const bytes = this.partBytes;
    this.parts = [];
    this.partBytes = 0;
    if (bytes <= SYNC_WRITE_BYTES) writeAtSync(this.fd, parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts), position);
    else await this.writes.add(writeAll(this.fd, parts, position));
  }

  /** What was received; the caller drains the writes before trusting the file. */
  async finish(): Promise<StreamDigest> {
    await this.flush();
    return this.hash.digest();
  }
}

/**
 * Receives a move stream into `dest`. `onHeader` runs as soon as the header
 * has come (the target refuses there what it would refuse anyway); then
 * every file is written while summed, and at the end checked against the
 * manifest: the same files, sizes and crc32s. Throws IntegrityError on
 * anything else (a short stream, a wrong byte, a file missing or extra,
 * trailing data); nothing partial is trusted.
 */
export async function receiveMove(
  source: AsyncIterable<Buffer | string>,
  dest: string,
  onHeader: (h: MoveHeader) => Promise<void> = async () => undefined,
  opts: { bulkTimeoutMs?: number } = {},
): Promise<MoveManifest> {
  const r = new ByteReader(source);
  const magic = await r.take(MAGIC.length, 'its header');
  if (!magic.equals(MAGIC)) {
    const what = magic.subarray(0, 6).toString('latin1') === 'HSMOVE' ? `version ${magic.subarray(6).toString('latin1')}, this agent reads ${MAGIC.subarray(6).toString('latin1')}: run the same hubshift on both agents` : 'bad magic';
    throw new IntegrityError(`not a hubshift move stream this agent reads (${what})`);
  }
  const header = MoveHeader.safeParse(await readJson(r, 'header'));
  if (!header.success) throw new IntegrityError(`move header refused at ${describeZodIssue(header.error)}`);
  await onHeader(header.data);
  const { pieceBytes } = header.data;
  // Some files may come beside the stream (a post-copy move's memory); the manifest names them with the rest.
  const bulk = header.data.bulk ? receiveBulk(header.data.bulk, dest, pieceBytes, opts.bulkTimeoutMs ?? 30_000) : undefined;
  // A bulk channel that fails fails the move at once: its source may be waiting on it before it sends the rest.
  bulk?.files.catch((err: unknown) => r.fail(err instanceof Error ? err : new Error(String(err))));
  const files = new Map<string, ReceivedFile>();
  const dirs = new Set<string>();
  const writes = new Writes();
  try {
    for (;;) {
      const type = (await r.take(1, 'a frame')).readUInt8(0);
      if (type === END) break;
      if (type !== DATA) throw new IntegrityError(`move stream holds a frame of unknown type ${type}`);
      const nameLen = (await r.take(2, 'a frame')).readUInt16BE(0);
      const name = (await r.take(nameLen, 'a frame')).toString('utf8');
      if (!MOVE_FILE_NAME.test(name)) throw new IntegrityError(`move stream names a file ${JSON.stringify(name)}; files are images/NAME, images/parent/NAME or files/NAME`);
      let left = (await r.take(4, 'a frame')).readUInt32BE(0);
      let file = files.get(name);
      if (!file) {
        if (files.size >= MAX_FILES) throw new IntegrityError(`move stream holds more than ${MAX_FILES} files`);
        const path = join(dest, name);
        const dir = dirname(path);
        if (!dirs.has(dir)) mkdirSync(dir, { recursive: true });
        dirs.add(dir);
        file = new ReceivedFile(openSync(path, 'w', 0o600), pieceBytes, writes);
        files.set(name, file);
      }
      while (left > 0) {
        const chunk = await r.upTo(left);
        if (chunk.length === 0) throw new IntegrityError(`move stream ended inside ${name}`);
        await file.write(chunk);
        left -= chunk.length;
      }
    }
    const parsed = MoveManifest.safeParse(await readJson(r, 'manifest'));
    if (!parsed.success) throw new IntegrityError(`move manifest refused at ${describeZodIssue(parsed.error)}`);
    const manifest = parsed.data;
    if (!(await r.atEnd())) throw new IntegrityError('move stream holds more than its manifest names');
    if (manifest.session.id !== header.data.session.id) throw new IntegrityError(`move manifest is of session ${manifest.session.id}, its header of ${header.data.session.id}`);
    const got = new Map<string, StreamDigest>();
    for (const [name, f] of files) got.set(name, await f.finish());
    await writes.drain();
    for (const [name, digest] of (await bulk?.files) ?? []) {
      if (got.has(name)) throw new IntegrityError(`move stream: ${name} came both in the stream and on its bulk channel`);
      got.set(name, digest);
    }
    const named = new Set(manifest.files.map((f) => f.name));
    const extra = [...got.keys()].find((n) => !named.has(n));
    if (extra) throw new IntegrityError(`move stream carried ${extra}, which its manifest does not name`);
    for (const f of manifest.files) {
      const digest = got.get(f.name);
      if (!digest) throw new IntegrityError(`move stream: ${f.name} never arrived; refused before criu`);
      const wrong = streamDigestMismatch(f, digest);
      if (wrong) throw new IntegrityError(`move stream: ${f.name} arrived but ${wrong}; refused before criu`);
      chmodSync(join(dest, f.name), f.mode);
    }
    return manifest;
  } finally {
    // A no-op once it has ended; otherwise the stream failed, and the channel goes with it.
    bulk?.abort(new Error('the move stream failed'));
    await bulk?.files.catch(() => undefined);
    await writes.drain().catch(() => undefined);
    for (const f of files.values()) {
      try {
        closeSync(f.fd);
      } catch {
        /* closed already: nothing to do */
      }
    }
  }
}
