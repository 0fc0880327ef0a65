import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PIECE_BYTES, hashFile } from '../../src/images/hashing.js';
import { NativeHasherUnavailable, hashFileNatively, nativeHasherInstalled, pieceHasherPath } from '../../src/images/native-hashing.js';
import { slices } from '../helpers/piece-digest.js';
import { useTempDir } from '../helpers/temp-dir.js';

describe('the native piece hasher', () => {
  const dir = useTempDir('hubshift-native-hashing-');
  const saved = process.env.HUBSHIFT_PIECE_HASHER;
  afterEach(() => {
    if (saved === undefined) delete process.env.HUBSHIFT_PIECE_HASHER;
    else process.env.HUBSHIFT_PIECE_HASHER = saved;
  });

  it('should be installed by setup, hashing in 16 lanes where the CPU has AVX-512', async () => {
    expect(nativeHasherInstalled()).toBe(true);
    const flags = (await readFile('/proc/cpuinfo', 'utf8')).split('\n').find((l) => l.startsWith('flags'))?.split(/\s+/) ?? [];
    const avx512 = flags.includes('avx512f') && flags.includes('avx512bw');
    expect(execFileSync(pieceHasherPath(), ['--lanes'], { encoding: 'utf8' }).trim()).toBe(`lanes ${avx512 ? 16 : 1}`);
  });

  it('should hash every piece as sha256 does, in lanes and one at a time, on one thread or several', async () => {
    // Pieces not a multiple of sha256's 64-byte block, exactly one of the hasher's 64 KiB reads, longer than one,
    // and a last piece shorter than the rest; enough of them that two threads fill their lanes and share the rest.
    const big = randomBytes(3 * (1 << 20) + 77);
    const small = big.subarray(0, 200_003);
    const cases: [Buffer, number][] = [[small, 55], [small, 64], [big, 4097], [big, 65_536], [big, 100_000], [big, 1 << 20], [big, big.length]];
    await writeFile(join(dir(), 'big'), big);
    await writeFile(join(dir(), 'small'), small);
    for (const [data, pieceBytes] of cases) {
      const path = join(dir(), data === big ? 'big' : 'small');
      for (const lanes of [true, false]) {
        for (const threads of [1, 2, 3]) {
          let reported = 0;
          const got = await hashFileNatively(path, pieceBytes, (n) => (reported += n), { lanes, threads });
          expect({ pieceBytes, lanes, threads, got }).toEqual({ pieceBytes, lanes, threads, got: slices(data, pieceBytes) });
          expect(reported).toBe(data.length);
        }
      }
    }
  });

  it('should hash files shorter than a block, a block, and empty ones', async () => {
    for (const bytes of [0, 1, 55, 56, 63, 64, 65, 119, 120, 128]) {
      const data = randomBytes(bytes);
      const path = join(dir(), `small-${bytes}`);
      await writeFile(path, data);
      // Ten-byte pieces give the larger of these files enough pieces for one thread's lanes.
      for (const pieceBytes of [10, PIECE_BYTES]) for (const lanes of [true, false]) expect(await hashFileNatively(path, pieceBytes, undefined, { lanes, threads: 1 })).toEqual(slices(data, pieceBytes));
    }
  });

  it('should be what hashFile uses for a large file, and leave it to the Python helper where it is not installed', async () => {
    // Past the size from which hashFile hands a file to a hasher (64 MiB).
    const data = randomBytes(4 * PIECE_BYTES + 4_321);
    const path = join(dir(), 'large');
    await writeFile(path, data);
    const want = slices(data, PIECE_BYTES);
    // The real hasher, behind a script that notes each run.
    const runs = join(dir(), 'runs');
    const noting = join(dir(), 'noting-hasher');
    await writeFile(noting, `#!/bin/sh\necho "$@" >> ${runs}\nexec ${pieceHasherPath()} "$@"\n`);
    await chmod(noting, 0o755);
    process.env.HUBSHIFT_PIECE_HASHER = noting;
    expect(await hashFile(path)).toEqual(want);
    expect((await readFile(runs, 'utf8')).trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^${PIECE_BYTES} \\d+ ${path}$`))]);
    process.env.HUBSHIFT_PIECE_HASHER = join(dir(), 'not-built');
    expect(nativeHasherInstalled()).toBe(false);
    await expect(hashFileNatively(path, PIECE_BYTES)).rejects.toThrow(NativeHasherUnavailable);
    expect(await hashFile(path)).toEqual(want);
  });

  it('should fail with the file named and what went wrong', async () => {
    await expect(hashFileNatively(dir(), PIECE_BYTES)).rejects.toThrow(`hashing ${dir()} failed: reading ${dir()} at byte 0: Is a directory`);
    // A file shorter than its size said (one that shrank while read): sysfs's say a page.
    await expect(hashFileNatively('/sys/kernel/uevent_seqnum', 100)).rejects.toThrow(/failed: the file ended at byte \d+ of 4096: it shrank while it was read$/);
    const missing = join(dir(), 'nothing-here');
    await expect(hashFileNatively(missing, PIECE_BYTES)).rejects.toThrow(`hashing ${missing} failed: cannot hash ${missing}: No such file or directory`);
    await expect(hashFileNatively(missing, 0)).rejects.toThrow(/failed: usage: piece-hasher/);
  });
});
