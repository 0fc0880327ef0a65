import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileDigest, MoveManifest } from '../../src/core/checkpoint.js';
import { PieceHasher } from '../../src/images/hashing.js';
import { packMove, receiveMove } from '../../src/images/move-stream.js';

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

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('the move stream', () => {
  let dir: string;
  let manifest: MoveManifest;
  let whole: Buffer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-move-stream-'));
    const a = Buffer.alloc(300_000, 7);
    const b = Buffer.from('server log\n');
    await writeFile(join(dir, 'a'), a);
    await writeFile(join(dir, 'b'), b, { mode: 0o640 });
    // Small pieces, so that a file spans several and chunks cross their edges.
    const digest = (x: Buffer): FileDigest => {
      const h = new PieceHasher(65_536);
      h.update(x);
      return h.digest();
    };
    manifest = {
      formatVersion: 2,
      session,
      criu: { version: '4.2', source: 'sid' },
      kernel: '6.18',
      dumpSeconds: 0.1,
      files: [
        { name: 'images/pages-1.img', ...digest(a), mode: 0o600 },
        { name: 'files/server.log', ...digest(b), mode: 0o640 },
      ],
    };
    whole = await collect(packMove(manifest, [{ name: 'images/pages-1.img', path: join(dir, 'a') }, { name: 'files/server.log', path: join(dir, 'b') }]));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('should carry every file with its bytes and mode, in chunks of any size', async () => {
    const out = join(dir, 'out');
    // Odd-sized chunks: the boundaries fall inside the header, the manifest and the files.
    const pieces = Array.from({ length: Math.ceil(whole.length / 997) }, (_, i) => whole.subarray(i * 997, i * 997 + 997));
    const got = await receiveMove(Readable.from(pieces), out);
    expect(got.session.id).toBe('s00000001');
    expect((await readFile(join(out, 'files/server.log'), 'utf8'))).toBe('server log\n');
    expect((await stat(join(out, 'files/server.log'))).mode & 0o777).toBe(0o640);
    expect((await stat(join(out, 'images/pages-1.img'))).size).toBe(300_000);
  });

  it.each([
    ['a changed byte', (b: Buffer) => Buffer.concat([b.subarray(0, b.length - 20), Buffer.from('X'), b.subarray(b.length - 19)]), /pages-1.img arrived but does not match its sha256 in the manifest \(bytes 262144\.\.300000\)/],
    // Byte 100 000 of pages-1.img: its second piece of 65 536.
    ['a changed byte in one piece', (b: Buffer) => Buffer.concat([b.subarray(0, b.length - 11 - 200_000), Buffer.from([0x55 ^ 7]), b.subarray(b.length - 11 - 200_000 + 1)]), /pages-1.img arrived but does not match its sha256 in the manifest \(bytes 65536\.\.131072\)/],
    ['a short stream', (b: Buffer) => b.subarray(0, b.length - 5), /ended inside files\/server.log/],
    ['trailing bytes', (b: Buffer) => Buffer.concat([b, Buffer.from('more')]), /more than its manifest/],
    ['a wrong magic', (b: Buffer) => Buffer.concat([Buffer.from('XXXXXXXX'), b.subarray(8)]), /bad magic/],
    ['a cut manifest', (b: Buffer) => b.subarray(0, 20), /ended inside its manifest/],
  ])('should refuse %s', async (_what, mangle, msg) => {
    await expect(receiveMove(Readable.from([mangle(whole)]), join(dir, `bad-${Math.random()}`))).rejects.toThrow(msg);
  });
});
