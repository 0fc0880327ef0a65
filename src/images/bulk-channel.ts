import { randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { MOVE_FILE_NAME, type BulkAt, type StreamDigest } from '../core/checkpoint.js';
import { IntegrityError, errorMessage } from '../core/errors.js';
import { writeAt } from '../util/fs.js';
import { PieceCrc32 } from './hashing.js';
import { DATA, END, FrameWriter } from './move-frames.js';
import { pageAlignedBuffer } from '../util/aligned-buffer.js';

/** What a write on a bulk channel the target closed fails with: the target's own answer says why (handOver asks it). */
export const BULK_CHANNEL_CLOSED = "the move's bulk channel closed";

/**
 * A move's bulk channel: the memory a post-copy move sends with its images,
 * on a TCP connection of its own beside the move stream. The agents' HTTP
 * stream hands its reader a 64 KB chunk at a time, each a new buffer: some
 * 1 700 of them for a session's 100 MB, and as much of the receiver's time
 * again collecting them. Here the target reads into one 4 MiB buffer, reused.
 *
 * The source listens before the freeze and names the port and a token in the
 * move's header; it takes the first connection from the target's address
 * that sends the token, and nothing else. It carries the move stream's own
 * frames (move-frames.ts), an END frame closing it; the crc32s go in the
 * move's manifest, as the stream's files' do.
 */

const TOKEN_BYTES = 32;
const READ_BYTES = 4 << 20;
const WRITE_BYTES = 4 << 20;
/** Writes in flight on the target before it stops reading. */
const WRITES_IN_FLIGHT = 4;

/** The source's end: listening until the target connects. */
export class BulkSender {
  private writer: Promise<FrameWriter> | undefined;

  private constructor(
    readonly at: BulkAt,
    private readonly server: Server,
    private readonly socket: Promise<Socket>,
    private readonly pieceBytes: number,
    private readonly waiting: NodeJS.Timeout,
    private readonly refuse: (e: Error) => void,
  ) {}

  /**
   * Listens on `address` (an ephemeral port) for `peer`. The target has
   * `timeoutMs` to connect, and then the connection that long without
   * progress, before every call rejects.
   */
  static async open(address: string, peer: string, pieceBytes: number, timeoutMs: number): Promise<BulkSender> {
    const token = randomBytes(TOKEN_BYTES);
    let accept!: (s: Socket) => void;
    let refuse!: (e: Error) => void;
    const socket = new Promise<Socket>((resolve, reject) => {
      accept = resolve;
      refuse = reject;
    });
    socket.catch(() => undefined);
    const server = createServer((s) => {
      s.on('error', () => undefined);
      if (s.remoteAddress !== peer) return void s.destroy();
      let got = Buffer.alloc(0);
      const onData = (c: Buffer): void => {
        got = Buffer.concat([got, c]);
        if (got.length < TOKEN_BYTES) return;
        s.off('data', onData);
        if (got.length !== TOKEN_BYTES || !timingSafeEqual(got, token)) return void s.destroy();
        s.pause();
        // One connection: the listener is done.
        server.close();
        accept(s);
      };
      s.on('data', onData);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => resolve());
    });
    const port = (server.address() as { port: number }).port;
    const timer = setTimeout(() => refuse(new Error(`the target did not open the move's bulk channel within ${timeoutMs} ms`)), timeoutMs);
    void socket.then(
      (s) => {
        clearTimeout(timer);
        s.setNoDelay(true);
        s.setTimeout(timeoutMs, () => s.destroy(new Error(`the move's bulk channel made no progress for ${timeoutMs} ms`)));
      },
      () => server.close(),
    );
    return new BulkSender({ address, port, token: token.toString('hex') }, server, socket, pieceBytes, timer, refuse);
  }

  /** The connection's frames, once the target has connected. */
  private frames(): Promise<FrameWriter> {
    this.writer ??= this.socket.then((s) => new FrameWriter(s, this.pieceBytes, BULK_CHANNEL_CLOSED));
    return this.writer;
  }

  /** A file's bytes as `source` yields them (a chunk may be reused once asked for the next); its digest. */
  async file(name: string, source: AsyncIterable<Buffer>): Promise<StreamDigest> {
    return (await this.frames()).file(name, source);
  }

  /** Ends the channel once every file is sent. */
  async end(): Promise<void> {
    await (await this.frames()).endWith(Buffer.alloc(0));
  }

  /** Stops listening and drops the connection (after a failure, or once done). */
  close(): void {
    clearTimeout(this.waiting);
    // Whatever still waits for the target's connection gives up (a no-op once it came).
    this.refuse(new Error("the move's bulk channel was closed"));
    this.server.close();
    void this.socket.then(
      (s) => s.destroy(),
      () => undefined,
    );
  }
}

interface ReceivingFile {
  fd: number;
  sum: PieceCrc32;
  /** Where its next buffer goes. */
  offset: number;
}

/**
 * The target's end: connects to the source's bulk channel and writes each
 * file under `dest` as it comes, the socket read into one reused buffer and
 * copied into write buffers. Resolves to every file's digest once the
 * source has ended the channel and every write is done; rejects on anything
 * else (a closed connection, a name the move stream would not carry, no
 * progress for `timeoutMs`). `abort` stops it.
 */
export function receiveBulk(at: BulkAt, dest: string, pieceBytes: number, timeoutMs: number): { files: Promise<Map<string, StreamDigest>>; abort(err: Error): void } {
  const files = new Map<string, ReceivingFile>();
  const free: Buffer[] = [];
  const writes = new Set<Promise<void>>();
  let failure: Error | undefined;
  let ended = false;
  let paused = false;
  let settled = false;
  let settle!: { resolve: (m: Map<string, StreamDigest>) => void; reject: (e: Error) => void };
  const files$ = new Promise<Map<string, StreamDigest>>((resolve, reject) => (settle = { resolve, reject }));
  files$.catch(() => undefined);

  const closeAll = (): void => {
    for (const f of files.values()) {
      try {
        closeSync(f.fd);
      } catch {
        /* closed already */
      }
    }
  };
  const fail = (err: unknown): void => {
    if (failure || settled) return;
    failure = err instanceof Error ? err : new Error(errorMessage(err));
    socket.destroy();
    // Nothing is closed under a write still running.
    void Promise.allSettled([...writes]).then(() => {
      closeAll();
      settled = true;
      settle.reject(failure as Error);
    });
  };
  const finishIfDone = (): void => {
    if (!ended || writes.size > 0 || failure || settled) return;
    closeAll();
    settled = true;
    settle.resolve(new Map([...files].map(([name, f]) => [name, f.sum.digest()])));
    socket.destroy();
  };

  // The write buffer being filled, and whose bytes it holds.
  let buf: Buffer | undefined;
  let bufFile: ReceivingFile | undefined;
  let filled = 0;
  const flush = (): void => {
    if (!buf || !bufFile || filled === 0) return;
    const [b, f, n] = [buf, bufFile, filled];
    const position = f.offset;
    f.offset += n;
    buf = undefined;
    filled = 0;
    const w: Promise<void> = writeAt(f.fd, b, n, position).then(
      () => {
        writes.delete(w);
        free.push(b);
        if (paused && writes.size < WRITES_IN_FLIGHT && !failure) {
          paused = false;
          socket.resume();
        }
        finishIfDone();
      },
      (err: unknown) => {
        writes.delete(w);
        fail(err);
      },
    );
    writes.add(w);
  };
  const data = (f: ReceivingFile, chunk: Buffer): void => {
    f.sum.update(chunk);
    if (bufFile !== f) flush();
    bufFile = f;
    for (let at = 0; at < chunk.length; ) {
      buf ??= free.pop() ?? pageAlignedBuffer(WRITE_BYTES);
      const n = chunk.copy(buf, filled, at);
      filled += n;
      at += n;
      if (filled === buf.length) flush();
    }
  };
  const fileFor = (name: string): ReceivingFile => {
    const known = files.get(name);
    if (known) return known;
    if (!MOVE_FILE_NAME.test(name)) throw new IntegrityError(`the move's bulk channel names a file ${JSON.stringify(name)}; files are images/NAME, images/parent/NAME or files/NAME`);
    const path = join(dest, name);
    mkdirSync(dirname(path), { recursive: true });
    const f: ReceivingFile = { fd: openSync(path, 'w', 0o600), sum: new PieceCrc32(pieceBytes), offset: 0 };
    files.set(name, f);
    return f;
  };

  // The frame being read: its header's bytes so far, then its file and the bytes left of it.
  let head: Buffer = Buffer.alloc(0);
  let current: ReceivingFile | undefined;
  let left = 0;
  const feed = (chunk: Buffer): void => {
    let at = 0;
    while (at < chunk.length) {
      if (ended) throw new IntegrityError("the move's bulk channel carried bytes past its end");
      if (current) {
        const n = Math.min(left, chunk.length - at);
        data(current, chunk.subarray(at, at + n));
        at += n;
        left -= n;
        if (left === 0) current = undefined;
        continue;
      }
      // A frame's header: its type, then for DATA the name (u16 length and bytes) and a u32 byte count; copied, as
      // the read buffer is reused.
      const want = head.length === 0 || head[0] === END ? 1 : head.length < 3 ? 3 : 3 + head.readUInt16BE(1) + 4;
      const n = Math.min(want - head.length, chunk.length - at);
      head = Buffer.concat([head, chunk.subarray(at, at + n)]);
      at += n;
      if (head.length < want) continue;
      if (head[0] === END) {
        ended = true;
        head = Buffer.alloc(0);
        continue;
      }
      if (head[0] !== DATA) throw new IntegrityError(`the move's bulk channel holds a frame of unknown type ${head[0]}`);
      // The type alone, or the name's length: the rest of the header is still to come.
      if (head.length < 3 || head.length < 7 + head.readUInt16BE(1)) continue;
      const nameLen = head.readUInt16BE(1);
      current = fileFor(head.subarray(3, 3 + nameLen).toString('utf8'));
      left = head.readUInt32BE(3 + nameLen);
      head = Buffer.alloc(0);
      if (left === 0) current = undefined;
    }
    if (ended) {
      flush();
      finishIfDone();
    }
  };

  const socket = connect({
    host: at.address,
    port: at.port,
    onread: {
      buffer: pageAlignedBuffer(READ_BYTES),
      callback: (n: number, b: Uint8Array): boolean => {
        if (failure || settled) return false;
        try {
          feed(Buffer.from(b.buffer, b.byteOffset, n));
        } catch (err) {
          fail(err);
          return false;
        }
        // Enough writes in flight: read again once one is done.
        if (writes.size >= WRITES_IN_FLIGHT) paused = true;
        return !paused;
      },
    },
  });
  socket.setNoDelay(true);
  socket.on('connect', () => socket.write(Buffer.from(at.token, 'hex')));
  socket.setTimeout(timeoutMs, () => fail(new Error(`the move's bulk channel made no progress for ${timeoutMs} ms`)));
  socket.on('error', (err) => fail(new Error(`the move's bulk channel failed: ${err.message}`)));
  socket.on('close', () => {
    if (!ended) fail(new Error("the move's bulk channel closed before its end"));
  });
  return { files: files$, abort: (err) => fail(err) };
}
