import { mkdtemp, readFile, rm, stat, statfs, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { criuCommand, criuExecutable } from '../../src/criu/binary.js';
import { dropKdatCache, ensureKdatCache, KDAT_CACHE_FILE, KDAT_STAMP_FILE } from '../../src/criu/kdat-cache.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { run } from '../../src/util/exec.js';

const TMPFS_MAGIC = 0x01021994;
const runIsTmpfs = (await statfs('/run')).type === TMPFS_MAGIC;

// Where /run is a tmpfs criu keeps its own cache and there is nothing to make.
describe.skipIf(runIsTmpfs)('criu\'s kernel cache on a /run that is not a tmpfs', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hubshift-kdat-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
    // Leave the cache made for the criu setup chose, as an agent would.
    await ensureKdatCache(await loadSelectedCriu());
  });

  const criuLoadsCache = async (): Promise<boolean> => {
    const log = join(work, `check-${Date.now()}.log`);
    const { cmd, args } = criuCommand(await loadSelectedCriu(), ['check', '-v4', '-o', log]);
    await run(cmd, args, { allowFailure: true, timeoutMs: 30_000 });
    return (await readFile(log, 'utf8')).includes(`Loaded kdat cache from ${KDAT_CACHE_FILE}`);
  };

  it('should make a cache criu loads, and keep it while it matches this boot and criu', async () => {
    const bin = await loadSelectedCriu();
    await dropKdatCache();
    expect(await criuLoadsCache()).toBe(false);
    expect(await ensureKdatCache(bin)).toBe('made');
    expect(await criuLoadsCache()).toBe(true);
    expect(await ensureKdatCache(bin)).toBe('kept');
  });

  it('should make it again for another boot, another criu or altered bytes', async () => {
    const bin = await loadSelectedCriu();
    await ensureKdatCache(bin);
    const stamp = JSON.parse(await readFile(KDAT_STAMP_FILE, 'utf8')) as Record<string, string>;
    await writeFile(KDAT_STAMP_FILE, JSON.stringify({ ...stamp, bootId: 'an-earlier-boot' }));
    expect(await ensureKdatCache(bin)).toBe('made');
    expect(await ensureKdatCache({ ...bin, version: '0.0.1' })).toBe('made');
    expect(await ensureKdatCache(bin)).toBe('made');
    // The same criu built again in place (setup does so when its patches change): a build's cache is its own.
    const exe = criuExecutable(bin);
    const { atime, mtime } = await stat(exe);
    try {
      await utimes(exe, atime, new Date(mtime.getTime() + 1_000));
      expect(await ensureKdatCache(bin)).toBe('made');
      expect(await ensureKdatCache(bin)).toBe('kept');
    } finally {
      await utimes(exe, atime, mtime);
    }
    expect(await ensureKdatCache(bin)).toBe('made');
    const bytes = await readFile(KDAT_CACHE_FILE);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    await writeFile(KDAT_CACHE_FILE, bytes);
    expect(await ensureKdatCache(bin)).toBe('made');
    expect(await criuLoadsCache()).toBe(true);
  });

  it('should drop only a cache it made', async () => {
    await ensureKdatCache(await loadSelectedCriu());
    await dropKdatCache();
    await expect(readFile(KDAT_CACHE_FILE)).rejects.toThrow(/ENOENT/);
    await expect(readFile(KDAT_STAMP_FILE)).rejects.toThrow(/ENOENT/);
  });

  it('should say why when criu cannot write its cache', async () => {
    await expect(ensureKdatCache({ argv: ['/bin/true'], version: 'none' })).rejects.toThrow(/criu did not write its kernel cache/);
  });
});
