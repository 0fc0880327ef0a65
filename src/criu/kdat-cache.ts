import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { run } from '../util/exec.js';
import { criuExecutable, type CriuBinary } from './binary.js';

/**
 * criu probes the kernel afresh on every call (0.03-0.04 s of each dump,
 * restore, lazy-pages and page server here) unless it can load the cache
 * it keeps in /run/criu.kdat. It writes that cache only where /run is a tmpfs,
 * which a reboot empties: a cache from an earlier boot would carry, among
 * others, a stale pfn for the zero page, which criu uses to skip pages.
 * Where /run is a disk directory (this VM), the agent makes the cache itself:
 * criu run once in a private mount namespace with a tmpfs on /run, its cache
 * copied out, and a stamp beside it naming this boot and this criu, down to
 * its executable file. The cache is re-made whenever the stamp does not
 * match; criu loads a cache whatever filesystem it is on, checking only its
 * size and magic, and the magic is the build's time (KDAT_MAGIC_2): a criu
 * built again (its patches changed) refuses the cache of the build before,
 * deletes it, and probes the kernel afresh at every call after.
 */
export const KDAT_RUN_DIR = '/run';
export const KDAT_CACHE_FILE = join(KDAT_RUN_DIR, 'criu.kdat');
export const KDAT_STAMP_FILE = join(KDAT_RUN_DIR, 'hubshift-criu-kdat.json');
const TMPFS_MAGIC = 0x01021994;
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

const KdatStamp = z.object({ bootId: z.string(), criu: z.string(), sha256: z.string() });
type KdatStamp = z.infer<typeof KdatStamp>;

export type KdatCacheState =
  /** /run is a tmpfs: criu keeps its own cache. */
  | 'criu'
  /** The stamped cache matches this boot and criu. */
  | 'kept'
  /** Made now. */
  | 'made';

/** Makes /run/criu.kdat for `bin` where criu would not, unless a matching one is there. */
export async function ensureKdatCache(bin: Pick<CriuBinary, 'argv' | 'version'>): Promise<KdatCacheState> {
  if ((await statfs(KDAT_RUN_DIR)).type === TMPFS_MAGIC) return 'criu';
  const want = { bootId: await bootId(), criu: `${bin.argv.join(' ')} ${bin.version} ${await buildOf(criuExecutable(bin))}` };
  const stamp = await readStamp();
  if (stamp && stamp.bootId === want.bootId && stamp.criu === want.criu && (await cacheDigest()) === stamp.sha256) return 'kept';
  const bytes = await probeInPrivateRun(bin.argv);
  // Cache first, stamp second, each by rename: a reader never sees a stamp vouching for a cache half written.
  await rm(KDAT_STAMP_FILE, { force: true });
  await replaceFile(KDAT_CACHE_FILE, bytes);
  const made: KdatStamp = { ...want, sha256: sha256(bytes) };
  await replaceFile(KDAT_STAMP_FILE, Buffer.from(JSON.stringify(made)));
  return 'made';
}

/**
 * Removes a cache this module made (never one criu made on a tmpfs): before
 * probing other criu binaries, whose cache layouts differ.
 */
export async function dropKdatCache(): Promise<void> {
  if (!(await readStamp())) return;
  await rm(KDAT_CACHE_FILE, { force: true });
  await rm(KDAT_STAMP_FILE, { force: true });
}

/** The criu executable as a file: a build made again at the same path is another one. */
async function buildOf(file: string): Promise<string> {
  const st = await stat(file).catch(() => null);
  return st ? `(${st.size} bytes, inode ${st.ino}, modified ${st.mtime.toISOString()})` : '(not found)';
}

async function probeInPrivateRun(argv: readonly string[]): Promise<Buffer> {
  const out = await mkdtemp(join(tmpdir(), 'hubshift-kdat-'));
  try {
    const copy = join(out, 'criu.kdat');
    // The tmpfs hides the real /run from this namespace only; criu check's own verdict does not matter, only that
    // kerndat ran and saved.
    await run('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', PROBE_SCRIPT, 'sh', KDAT_RUN_DIR, copy, ...argv], {
      timeoutMs: 30_000,
      allowFailure: true,
    });
    const bytes = await readFile(copy).catch(() => null);
    if (!bytes || bytes.length === 0) throw new Error(`criu did not write its kernel cache in a private ${KDAT_RUN_DIR} (is unshare --mount allowed here?)`);
    return bytes;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** Fixed; paths and argv arrive as positional parameters. $1: the run directory to cover with a tmpfs; $2: where to copy criu's cache; the rest: criu's argv. */
const PROBE_SCRIPT = 'mount -t tmpfs -o size=1m,mode=0755 hubshift-kdat "$1" || exit 1; run=$1; out=$2; shift 2; "$@" check >/dev/null 2>&1; exec cp "$run/criu.kdat" "$out"';

async function readStamp(): Promise<KdatStamp | null> {
  try {
    return KdatStamp.parse(JSON.parse(await readFile(KDAT_STAMP_FILE, 'utf8')));
  } catch {
    return null;
  }
}

async function cacheDigest(): Promise<string | null> {
  return readFile(KDAT_CACHE_FILE).then(sha256, () => null);
}

async function bootId(): Promise<string> {
  return (await readFile(BOOT_ID_FILE, 'utf8')).trim();
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function replaceFile(path: string, bytes: Buffer): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, bytes, { mode: 0o600 });
  await rename(tmp, path);
}
