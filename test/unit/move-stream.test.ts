import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MoveManifest, StreamDigest } from '../../src/core/checkpoint.js';
import { BulkSender } from '../../src/images/bulk-channel.js';
import { PieceCrc32 } from '../../src/images/hashing.js';
import { MoveStreamWriter, receiveMove } from '../../src/images/move-stream.js';

const session = {
  id: 's00000001',
  user: 'ada',
  state: 'checkpointed' as const,
  network: { ip: '10.0.0.2', prefixLength: 24, gateway: '10.0.0.1', mac: '02:00:00:00:00:01', hostVeth: 'hsv00000001', port: 8888 },
  token: 'x'.repeat(32),
  pid: null,
  home: '/tmp',
  env: {},
  createdAt: '2026-11-23T00:00:00Z',
  updatedAt: '2026-11-23T00:00:00Z',
  lastCheckpoint: null,
  error: null,
};

/** crc32 as zlib computes it, in eight hex digits. */
function crc(text: string): string {
  return crc32(Buffer.from(text)).toString(16).padStart(8, '0');
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

type Frame = ['data', string, Buffer] | ['end', MoveManifest];

/** A move stream as the writer makes it, collected. */
async function build(frames: Frame[], sessionId = session.id): Promise<Buffer> {
  const sink = new PassThrough();
  const w = new MoveStreamWriter(sink, { session: { ...session, id: sessionId }, pieceBytes: 65_536 });
  const collected = collect(sink);
  for (const f of frames) {
    if (f[0] === 'data') await w.data(f[1], f[2]);
    else await w.end(f[1]);
  }
  if (!frames.some((f) => f[0] === 'end')) sink.end();
  return collected;
}

describe('the move stream', () => {
  let dir: string;
  let manifest: MoveManifest;
  let whole: Buffer;
  const a = Buffer.alloc(300_000, 7);
  const b = Buffer.from('server log\n');
  // Small pieces, so that a file spans several and chunks cross their edges.
  const digest = (x: Buffer): StreamDigest => {
    const h = new PieceCrc32(65_536);
    h.update(x);
    return h.digest();
  };
  // Page images go while criu writes them, so files interleave.
  const frames = (pages = a): Frame[] => [
    ['data', 'images/pages-1.img', pages.subarray(0, 100_000)],
    ['data', 'files/server.log', b],
    ['data', 'images/pages-1.img', pages.subarray(100_000)],
    ['end', manifest],
  ];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-move-stream-'));
    manifest = {
      formatVersion: 3,
      session,
      criu: { version: '4.2', source: 'sid' },
      kernel: '6.18',
      dumpSeconds: 0.1,
      files: [
        { name: 'images/pages-1.img', ...digest(a), mode: 0o600 },
        { name: 'files/server.log', ...digest(b), mode: 0o640 },
      ],
    };
    whole = await build(frames());
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('should carry every file with its bytes and mode, in chunks of any size', async () => {
    const out = join(dir, 'out');
    // Odd-sized chunks: the boundaries fall inside the header, the frames and the manifest.
    const pieces = Array.from({ length: Math.ceil(whole.length / 997) }, (_, i) => whole.subarray(i * 997, i * 997 + 997));
    let header: unknown;
    const got = await receiveMove(Readable.from(pieces), out, async (h) => {
      header = h;
    });
    expect(header).toMatchObject({ session: { id: 's00000001' }, pieceBytes: 65_536 });
    expect(got.session.id).toBe('s00000001');
    expect(await readFile(join(out, 'files/server.log'), 'utf8')).toBe('server log\n');
    expect((await stat(join(out, 'files/server.log'))).mode & 0o777).toBe(0o640);
    expect((await readFile(join(out, 'images/pages-1.img'))).equals(a)).toBe(true);
  });

  it("should sum each file in crc32 pieces as it frames it, whatever the chunks and however files interleave", async () => {
    const sink = new PassThrough();
    const collected = collect(sink);
    const w = new MoveStreamWriter(sink, { session, pieceBytes: 4 });
    // crc32 of "123456789" is cbf43926 (the standard check value); in pieces of 4: "1234", "5678", "9".
    await w.data('images/a.img', Buffer.from('12'));
    await w.data('files/b', Buffer.from('x'));
    await w.data('images/a.img', Buffer.from('3456789'));
    expect(w.sent('images/a.img')).toEqual({ bytes: 9, pieceBytes: 4, crc32: ['9be3e0a3', '7e525607', '8d076785'] });
    expect(w.queueFiles([{ name: 'files/c', bytes: Buffer.from('123456789') }, { name: 'files/d', bytes: Buffer.from('12') }])).toEqual(
      new Map([
        ['files/c', { bytes: 9, pieceBytes: 4, crc32: [crc('1234'), crc('5678'), crc('9')] }],
        ['files/d', { bytes: 2, pieceBytes: 4, crc32: [crc('12')] }],
      ]),
    );
    expect(w.sent('files/empty')).toEqual({ bytes: 0, pieceBytes: 4, crc32: ['00000000'] });
    expect(new PieceCrc32(16).digest().crc32).toEqual(['00000000']);
    const whole = new PieceCrc32(16);
    whole.update(Buffer.from('123456789'));
    expect(whole.digest().crc32).toEqual(['cbf43926']);
    sink.end();
    await collected;
  });

  it('should take the files that come on its bulk channel, and check them against the manifest too', async () => {
    for (const [what, sentBytes, want] of [
      ['whole', a, null],
      ['altered', Buffer.concat([a.subarray(0, 1000), Buffer.from([a[1000]! ^ 1]), a.subarray(1001)]), /images\/pages-1.img arrived but/],
    ] as const) {
      const sender = await BulkSender.open('127.0.0.1', '127.0.0.1', 65_536, 5_000);
      try {
        const sink = new PassThrough();
        const collected = collect(sink);
        const w = new MoveStreamWriter(sink, { session, pieceBytes: 65_536, bulk: sender.at });
        const received = (async () => receiveMove(Readable.from([await collected]), join(dir, `bulk-${what}`)))();
        // The receiver connects once it has read the header, so the stream is handed over first.
        await w.data('files/server.log', b);
        await w.end(manifest);
        const memory = (async function* () {
          yield sentBytes;
        })();
        await sender.file('images/pages-1.img', memory);
        await sender.end();
        if (want) await expect(received).rejects.toThrow(want);
        else {
          expect((await received).files.map((f) => f.name)).toEqual(['images/pages-1.img', 'files/server.log']);
          expect((await readFile(join(dir, `bulk-${what}`, 'images/pages-1.img'))).equals(a)).toBe(true);
          expect(await readFile(join(dir, `bulk-${what}`, 'files/server.log'), 'utf8')).toBe('server log\n');
        }
      } finally {
        sender.close();
      }
    }
  });

  it('should take many files (more than the receiver has write buffers)', async () => {
    const small = Array.from({ length: 40 }, (_, i) => Buffer.from(`image ${i}\n`));
    const many: MoveManifest = { ...manifest, files: small.map((x, i) => ({ name: `images/core-${i}.img`, ...digest(x), mode: 0o600 })) };
    const stream = await build([...small.map((x, i): Frame => ['data', `images/core-${i}.img`, x]), ['end', many]]);
    const out = join(dir, 'many');
    await receiveMove(Readable.from([stream]), out);
    expect(await readFile(join(out, 'images/core-39.img'), 'utf8')).toBe('image 39\n');
  });

  it('should reject a pending write, not wait for ever, once the stream closes under it', async () => {
    // Nobody reads: the write stays pending until the stream is destroyed.
    const sink = new PassThrough({ highWaterMark: 1 });
    const w = new MoveStreamWriter(sink, { session, pieceBytes: 65_536 });
    const pending = w.data('images/pages-1.img', Buffer.alloc(1 << 20));
    setTimeout(() => sink.destroy(new Error('the link is cut')), 10);
    await expect(pending).rejects.toThrow(/move stream was closed/);
    await expect(w.data('images/pages-1.img', Buffer.alloc(1))).rejects.toThrow(/move stream was closed/);
  });

  it('should stop at the header when the receiver refuses the session', async () => {
    const out = join(dir, 'refused');
    await expect(receiveMove(Readable.from([whole]), out, () => Promise.reject(new Error('session s00000001 is already running here')))).rejects.toThrow(/already running/);
    await expect(stat(join(out, 'images'))).rejects.toThrow(/ENOENT/);
  });

  const changed = Buffer.from(a);
  changed.writeUInt8(0x55, 100_000);
  it.each([
    // Byte 100 000 of pages-1.img: its second piece of 65 536.
    ['a changed byte', () => build(frames(changed)), /pages-1.img arrived but does not match its crc32 in the manifest \(bytes 65536\.\.131072\)/],
    ['a stream cut inside a file', async () => whole.subarray(0, 50_000), /ended inside images\/pages-1.img/],
    ['a stream cut inside the manifest', async () => whole.subarray(0, whole.length - 5), /ended inside manifest/],
    ['trailing bytes', async () => Buffer.concat([whole, Buffer.from('more')]), /more than its manifest/],
    ['a wrong magic', async () => Buffer.concat([Buffer.from('XXXXXXXX'), whole.subarray(8)]), /bad magic/],
    ['an older agent', async () => Buffer.concat([Buffer.from('HSMOVE04'), whole.subarray(8)]), /version 04, this agent reads 05: run the same hubshift on both agents/],
    ['a file never sent', () => build([['data', 'images/pages-1.img', a], ['end', manifest]]), /files\/server.log never arrived/],
    ['a file the manifest does not name', () => build([...frames().slice(0, 3), ['data', 'images/extra.img', b], ['end', manifest]]), /carried images\/extra.img, which its manifest does not name/],
    ['a path outside the image', () => build([['data', 'images/../../etc/x', b]]), /files are images\/NAME, images\/parent\/NAME or files\/NAME/],
    ['a parent path outside the image', () => build([['data', 'images/parent/../../x', b]]), /files are images\/NAME, images\/parent\/NAME or files\/NAME/],
    ['a manifest of another session', () => build(frames(), 's00000002'), /manifest is of session s00000001, its header of s00000002/],
  ])('should refuse %s', async (_what, make, msg) => {
    await expect(receiveMove(Readable.from([await make()]), join(dir, `bad-${Math.random()}`))).rejects.toThrow(msg);
  });
});
