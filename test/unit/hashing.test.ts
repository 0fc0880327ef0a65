import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobEntry, CheckpointManifest } from '../../src/core/checkpoint.js';
import { GrowingFileHasher } from '../../src/images/growing-file-hasher.js';
import { PIECE_BYTES, PieceHasher, digestMismatch, hashFile, hashFileInProcess } from '../../src/images/hashing.js';
import { HASH_PIECES_PY, HashingHelpers, hashFileInHelper } from '../../src/images/helper-hashing.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import { PythonHelper } from '../../src/util/python-helper.js';
import { sha, slices } from '../helpers/piece-digest.js';

describe('hashing files in pieces', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-hashing-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('should hash fed chunks of any size into the sha256 of each piece', () => {
    const data = randomBytes(10_500);
    for (const sizes of [[10_500], [1, 999, 1, 9_499], [3_000, 3_000, 4_500], [1000, 1000, 8500]]) {
      const h = new PieceHasher(1000);
      let at = 0;
      for (const n of sizes) h.update(data.subarray(at, (at += n)));
      expect(h.digest()).toEqual(slices(data, 1000));
    }
  });

  it('should end on a piece edge without an empty last piece, and give an empty stream one piece', () => {
    const h = new PieceHasher(1000);
    h.update(randomBytes(3000));
    expect(h.digest().sha256).toHaveLength(3);
    expect(new PieceHasher(1000).digest()).toEqual({ bytes: 0, pieceBytes: 1000, sha256: [sha(Buffer.alloc(0))] });
  });

  it('should hash a file in parallel to the same pieces, small or default-sized, and long pieces in order', async () => {
    const small = randomBytes(10_500);
    await writeFile(join(dir, 'small'), small);
    let reported = 0;
    expect(await hashFile(join(dir, 'small'), (n) => (reported += n), 1000)).toEqual(slices(small, 1000));
    expect(reported).toBe(small.length);
    const big = randomBytes(2 * PIECE_BYTES + 12_345);
    await writeFile(join(dir, 'big'), big);
    expect(await hashFile(join(dir, 'big'))).toEqual(slices(big, PIECE_BYTES));
    // A format 1 blob: one piece the length of the file, longer than is held in memory.
    expect(await hashFile(join(dir, 'big'), undefined, big.length)).toEqual({ bytes: big.length, pieceBytes: big.length, sha256: [sha(big)] });
    await writeFile(join(dir, 'empty'), '');
    expect(await hashFile(join(dir, 'empty'))).toEqual(slices(Buffer.alloc(0), PIECE_BYTES));
  });

  it('should hash a large file through the helper to the same pieces as in-process', async () => {
    // Past the size from which hashFile uses the helper (64 MiB).
    const big = randomBytes(4 * PIECE_BYTES + 4_321);
    const path = join(dir, 'large');
    await writeFile(path, big);
    let reported = 0;
    const want = slices(big, PIECE_BYTES);
    expect(await hashFileInHelper(path, PIECE_BYTES, (n) => (reported += n))).toEqual(want);
    expect(reported).toBe(big.length);
    expect(await hashFile(path)).toEqual(want);
    expect(await hashFileInProcess(path)).toEqual(want);
    // Any piece size, the whole file as one piece too.
    expect(await hashFileInHelper(path, 1 << 20)).toEqual(slices(big, 1 << 20));
    expect(await hashFileInHelper(path, big.length)).toEqual({ bytes: big.length, pieceBytes: big.length, sha256: [sha(big)] });
    // The helper reads 1 MiB at a time: pieces that end inside a read, and pieces smaller than one.
    expect(await hashFileInHelper(path, (3 << 19) + 123)).toEqual(slices(big, (3 << 19) + 123));
    const small = big.subarray(0, (1 << 20) + 5);
    await writeFile(join(dir, 'small'), small);
    expect(await hashFileInHelper(join(dir, 'small'), 4097)).toEqual(slices(small, 4097));
    await writeFile(join(dir, 'empty-helper'), '');
    expect(await hashFileInHelper(join(dir, 'empty-helper'), PIECE_BYTES)).toEqual(slices(Buffer.alloc(0), PIECE_BYTES));
  });

  it('should hash with helpers started ahead of need, start the next ones after, and replace one that died', async () => {
    const path = join(dir, 'warm');
    const data = randomBytes(3 * (1 << 20) + 11);
    await writeFile(path, data);
    const helpers = new HashingHelpers();
    const alive = async (pid: number): Promise<true | undefined> => ((await isAlive(pid)) ? true : undefined);
    const gone = async (pid: number): Promise<true | undefined> => ((await isAlive(pid)) ? undefined : true);
    try {
      // Not warmed: each is started when asked, and none is left waiting.
      expect(await hashFileInHelper(path, 1 << 20, undefined, helpers)).toEqual(slices(data, 1 << 20));
      await sleep(700);
      expect(helpers.waitingPids).toEqual([]);
      helpers.warm();
      const warm = helpers.waitingPids;
      expect(warm).toHaveLength(2);
      for (const pid of warm) await waitFor('a waiting helper', () => alive(pid), { timeoutMs: 5_000, intervalMs: 10 });
      // Two at once, as a restore verifies its server's and its kernel's page images: both are the waiting ones.
      const both = await Promise.all([hashFileInHelper(path, 1 << 20, undefined, helpers), hashFileInHelper(path, 4097, undefined, helpers)]);
      expect(both).toEqual([slices(data, 1 << 20), slices(data, 4097)]);
      for (const pid of warm) expect(await isAlive(pid)).toBe(false);
      const next = await waitFor('the next two helpers', async () => (helpers.waitingPids.length === 2 ? helpers.waitingPids : undefined), { timeoutMs: 5_000, intervalMs: 20 });
      expect(next.some((pid) => warm.includes(pid))).toBe(false);
      // A waiting helper that was killed is not given a file: a new one hashes it, with the same result.
      for (const pid of next) process.kill(pid, 'SIGKILL');
      for (const pid of next) await waitFor('the killed helper to be gone', () => gone(pid), { timeoutMs: 5_000, intervalMs: 10 });
      // A zombie already counts as gone above; its exit reaches this process a moment later.
      await sleep(100);
      expect(await hashFileInHelper(path, 1 << 20, undefined, helpers)).toEqual(slices(data, 1 << 20));
    } finally {
      const waiting = helpers.waitingPids;
      helpers.close();
      for (const pid of waiting) await waitFor('the waiting helper to end', () => gone(pid), { timeoutMs: 5_000, intervalMs: 20 });
    }
    // Closed: no helper is started again once the last one taken has ended.
    await sleep(700);
    expect(helpers.waitingPids).toEqual([]);
  });

  it('should end a waiting helper quietly when its parent goes before giving it a file', async () => {
    const helper = new PythonHelper(HASH_PIECES_PY);
    helper.child.stdin?.end();
    const [code] = (await once(helper.child, 'close')) as [number | null];
    expect(code).toBe(0);
    expect(helper.lastWords).toBe('');
  });

  it('should fail with the file named when the helper cannot hash it', async () => {
    await expect(hashFileInHelper(dir, PIECE_BYTES)).rejects.toThrow(`hashing ${dir} failed: IsADirectoryError: [Errno 21] Is a directory`);
    // A file shorter than its size said when it was opened (one that shrank while read): sysfs's say a page.
    await expect(hashFileInHelper('/sys/kernel/uevent_seqnum', PIECE_BYTES)).rejects.toThrow(/failed: EOFError: the file ended at byte \d+ of \d+: it shrank while it was read$/);
    await expect(hashFileInHelper(join(dir, 'nothing-here'), PIECE_BYTES)).rejects.toThrow(/failed: FileNotFoundError: \[Errno 2\] No such file or directory/);
  });

  it('should follow a file while it is written and hash it to the same pieces', async () => {
    const d = join(dir, 'growing');
    const data = randomBytes(3 * (1 << 20) + 77);
    const hasher = new GrowingFileHasher(d, { match: /^pages-\d+\.img$/, syncEveryBytes: 0, pollMs: 1 }).start();
    // The hasher starts before criu has made the directory.
    await sleep(5);
    await mkdir(d);
    for (let at = 0; at < data.length; at += 300_001) {
      await appendFile(join(d, 'pages-1.img'), data.subarray(at, at + 300_001));
      await sleep(1);
    }
    const got = await hasher.finish();
    expect(got.get('pages-1.img')).toEqual(slices(data, PIECE_BYTES));
  });

  it('should say which bytes differ', () => {
    const data = randomBytes(5000);
    const want = slices(data, 1000);
    const altered = Buffer.from(data);
    altered.writeUInt8(altered.readUInt8(2500) ^ 1, 2500);
    expect(digestMismatch(want, slices(data, 1000))).toBeUndefined();
    expect(digestMismatch(want, slices(altered, 1000))).toBe('does not match its sha256 in the manifest (bytes 2000..3000) (altered or corrupt)');
    expect(digestMismatch(want, slices(data.subarray(0, 4000), 1000))).toBe('is 4000 bytes, the manifest says 5000 (truncated or altered)');
    expect(digestMismatch(slices(data, 5000), slices(altered, 5000))).toBe('does not match its sha256 in the manifest (altered or corrupt)');
  });

  it('should read a format 1 blob (one sha256) as one piece, and refuse a piece count that does not fit the size', () => {
    const s = 'a'.repeat(64);
    expect(BlobEntry.parse({ name: 'pages-1.img', bytes: 5000, sha256: s })).toEqual({ name: 'pages-1.img', bytes: 5000, pieceBytes: 5000, sha256: [s] });
    expect(BlobEntry.parse({ name: 'e', bytes: 0, sha256: s })).toEqual({ name: 'e', bytes: 0, pieceBytes: 1, sha256: [s] });
    const r = BlobEntry.safeParse({ name: 'pages-1.img', bytes: 5000, pieceBytes: 1000, sha256: [s, s] });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['sha256']);
    expect(CheckpointManifest.shape.formatVersion.safeParse(3).success).toBe(false);
  });
});
