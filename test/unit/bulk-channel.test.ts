import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BulkSender, receiveBulk } from '../../src/images/bulk-channel.js';
import { useTempDir } from '../helpers/temp-dir.js';

const PIECE = 1 << 20;

/** `bytes` in chunks of uneven sizes, one reused buffer as embedded memory is read (a chunk is valid until the next). */
async function* chunksOf(bytes: Buffer): AsyncGenerator<Buffer> {
  const reused = Buffer.alloc(3 << 20);
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = Math.min([65_537, 3 << 20, 1, 777_777][i % 4]!, bytes.length - at);
    bytes.copy(reused, 0, at, at + n);
    yield reused.subarray(0, n);
    at += n;
  }
}

/** A move's bulk channel over loopback: the source's sender, the target's receiver. */
describe("a move's bulk channel", () => {
  const dir = useTempDir('hubshift-bulk-');

  it('should carry files byte for byte, with the same crc32s at both ends', async () => {
    const a = randomBytes(9 * PIECE + 12_345);
    const b = randomBytes(5);
    const sender = await BulkSender.open('127.0.0.1', '127.0.0.1', PIECE, 5_000);
    try {
      const r = receiveBulk(sender.at, dir(), PIECE, 5_000);
      const sent = [await sender.file('images/pages-1.img', chunksOf(a)), await sender.file('images/pages-2.img', chunksOf(b))];
      await sender.end();
      const got = await r.files;
      expect([got.get('images/pages-1.img'), got.get('images/pages-2.img')]).toEqual(sent);
      expect(sent[0]!.crc32).toHaveLength(10);
      expect((await readFile(join(dir(), 'images/pages-1.img'))).equals(a)).toBe(true);
      expect((await readFile(join(dir(), 'images/pages-2.img'))).equals(b)).toBe(true);
    } finally {
      sender.close();
    }
  });

  it('should take only the connection that sends its token, and only from the target', async () => {
    const sender = await BulkSender.open('127.0.0.1', '127.0.0.1', PIECE, 5_000);
    try {
      // A stranger with the wrong token is dropped; the sender still waits for the target.
      const stranger = connect({ host: '127.0.0.1', port: sender.at.port });
      stranger.on('error', () => undefined);
      stranger.write(randomBytes(32));
      await new Promise((resolve) => stranger.once('close', resolve));
      const r = receiveBulk(sender.at, dir(), PIECE, 5_000);
      await sender.file('images/pages-1.img', chunksOf(Buffer.from('memory')));
      await sender.end();
      expect([...(await r.files).keys()]).toEqual(['images/pages-1.img']);
    } finally {
      sender.close();
    }
    // A source that expects its target at another address refuses this one, and gives up waiting.
    const elsewhere = await BulkSender.open('127.0.0.1', '127.0.0.2', PIECE, 300);
    try {
      const r = receiveBulk(elsewhere.at, dir(), PIECE, 5_000);
      await expect(r.files).rejects.toThrow(/closed before its end/);
      await expect(elsewhere.file('images/pages-1.img', chunksOf(Buffer.from('x')))).rejects.toThrow(/did not open the move's bulk channel within 300 ms/);
    } finally {
      elsewhere.close();
    }
  });

  it('should refuse a channel cut before its end, and a name the move stream would not carry', async () => {
    const sender = await BulkSender.open('127.0.0.1', '127.0.0.1', PIECE, 5_000);
    const r = receiveBulk(sender.at, dir(), PIECE, 5_000);
    await sender.file('images/pages-1.img', chunksOf(randomBytes(2 * PIECE)));
    sender.close();
    await expect(r.files).rejects.toThrow(/closed before its end/);

    const bad = await BulkSender.open('127.0.0.1', '127.0.0.1', PIECE, 5_000);
    try {
      const r2 = receiveBulk(bad.at, dir(), PIECE, 5_000);
      await bad.file('../escape.img', chunksOf(Buffer.from('x'))).catch(() => undefined);
      await expect(r2.files).rejects.toThrow(/names a file "..\/escape.img"/);
    } finally {
      bad.close();
    }
  });
});
