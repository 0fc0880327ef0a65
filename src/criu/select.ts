import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CriuError, errorMessage } from '../core/errors.js';
import { run } from '../util/exec.js';
import { criuCommand, criuExecutable, CriuBinary, privatePrefixArgv } from './binary.js';
import { probeArgsFromStdin, probeCriu, probeHugePageFill, probeLazyStack, probePostCopy } from './probe.js';
import { ensurePipeMaxSize } from './pipe-size.js';
import { dropKdatCache } from './kdat-cache.js';

/** Where the chosen criu is recorded, per machine. */
export const CRIU_CACHE_FILE = process.env.HUBSHIFT_CRIU_CACHE ?? '/var/lib/hubshift/criu.json';
/** Where Debian unstable's criu is unpacked when the system's does not work. */
export const CRIU_PRIVATE_PREFIX = process.env.HUBSHIFT_CRIU_PREFIX ?? '/opt/hubshift/criu-sid';

/** Where hubshift builds criu with its patches (infra/setup/build-criu.sh, infra/setup/criu/*.patch). */
export const CRIU_BUILD_PREFIX = process.env.HUBSHIFT_CRIU_BUILD_PREFIX ?? '/opt/hubshift/criu-huge-fill';
const BUILT_CRIU = join(CRIU_BUILD_PREFIX, 'sbin/criu');

const SETUP_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../infra/setup');
const INSTALL_SCRIPT = join(SETUP_DIR, 'install-criu-sid.sh');
const BUILD_SCRIPT = join(SETUP_DIR, 'build-criu.sh');
/** hubshift's patches to criu: build-criu.sh applies every one, in name order. */
const PATCH_DIR = join(SETUP_DIR, 'criu');
/** The names of hubshift's patches to criu, in the order they are applied (each file says what it changes and why). */
export const patchFiles = async (): Promise<string[]> => (await readdir(PATCH_DIR)).filter((n) => n.endsWith('.patch')).sort();

export interface CandidateReport {
  source: CriuBinary['source'];
  command: string;
  version: string | null;
  ok: boolean;
  reason: string | null;
}

async function describe(argv: string[], source: CriuBinary['source'], libdir: string | null): Promise<CriuBinary | string> {
  const v = criuCommand({ argv }, ['--version']);
  let version: string;
  try {
    const r = await run(v.cmd, v.args, { timeoutMs: 10_000 });
    version = /Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? 'unknown';
  } catch (err) {
    return `does not run: ${errorMessage(err)}`;
  }
  return {
    argv,
    version,
    source,
    libdir,
    kernel: release(),
    probedAt: new Date().toISOString(),
    memDirtyTrack: await criuHasFeature(argv, 'mem_dirty_track'),
    lazyPages: await criuHasFeature(argv, 'uffd-noncoop'),
    nftablesLock: await criuHasFeature(argv, 'nftables'),
  };
}

async function criuHasFeature(argv: string[], feature: string): Promise<boolean> {
  const c = criuCommand({ argv }, ['check', '--feature', feature]);
  return (await run(c.cmd, c.args, { timeoutMs: 20_000, allowFailure: true })).code === 0;
}

function candidates(): Array<{ source: CriuBinary['source']; argv: string[]; libdir: string | null; exists: boolean }> {
  const out: Array<{ source: CriuBinary['source']; argv: string[]; libdir: string | null; exists: boolean }> = [];
  const envPath = process.env.HUBSHIFT_CRIU;
  if (envPath) out.push({ source: 'env', argv: [envPath], libdir: null, exists: existsSync(envPath) });
  out.push({ source: 'built', argv: [BUILT_CRIU], libdir: null, exists: existsSync(BUILT_CRIU) });
  out.push({ source: 'system', argv: ['/usr/sbin/criu'], libdir: null, exists: existsSync('/usr/sbin/criu') });
  out.push({
    source: 'private',
    argv: privatePrefixArgv(CRIU_PRIVATE_PREFIX),
    libdir: existsSync(join(CRIU_PRIVATE_PREFIX, 'usr/lib/criu')) ? join(CRIU_PRIVATE_PREFIX, 'usr/lib/criu') : null,
    exists: existsSync(join(CRIU_PRIVATE_PREFIX, 'usr/sbin/criu')),
  });
  return out;
}

/** The criu that `npm run setup` chose, if it was chosen on this kernel and is still there. */
export async function loadSelectedCriu(): Promise<CriuBinary> {
  let parsed: CriuBinary;
  try {
    parsed = CriuBinary.parse(JSON.parse(await readFile(CRIU_CACHE_FILE, 'utf8')));
  } catch {
    throw new CriuError('criu_unavailable', `no working criu has been selected on this machine (${CRIU_CACHE_FILE} is missing or invalid); run npm run setup`, 'not selected');
  }
  if (parsed.kernel !== release()) {
    throw new CriuError('criu_unavailable', `criu was selected for kernel ${parsed.kernel}, this is ${release()}; run npm run setup again`, 'kernel changed');
  }
  const binPath = criuExecutable(parsed);
  if (!existsSync(binPath)) {
    throw new CriuError('criu_unavailable', `the selected criu ${binPath} is gone; run npm run setup again`, 'binary missing');
  }
  return parsed;
}

/**
 * Finds a criu that passes the TCP dump/restore probe: $HUBSHIFT_CRIU,
 * hubshift's build (made first when `install` is set), the system's, then
 * Debian unstable's in a private prefix (installed when `install` is set and
 * no other works). Records the choice for the agent.
 */
export async function selectCriu(opts: { install: boolean; force: boolean; workDir: string; log: (msg: string) => void }): Promise<{ chosen: CriuBinary; tried: CandidateReport[] }> {
  // A build made (or made again, its patches changed) since the choice was recorded is probed before anything else.
  const rebuilt = opts.install && (await ensureBuiltCriu(opts.log));
  if (!opts.force && !rebuilt) {
    let cached: CriuBinary | undefined;
    try {
      cached = await loadSelectedCriu();
    } catch {
      /* probe below */
    }
    // The sysctl does not survive a reboot; the recorded choice does.
    if (cached) await raisePipeMaxSize(opts.log);
    if (cached?.postCopy?.ok && cached.nftablesLock !== undefined && cached.hugePageFill !== undefined && cached.lazyStackExact !== undefined && cached.argsFromStdin !== undefined) return { chosen: cached, tried: [] };
    if (cached) {
      // Chosen before post-copy or the nftables lock was probed, or post-copy failed then (before fs.pipe-max-size
      // was raised): probe those alone.
      let chosen = cached;
      if (chosen.nftablesLock === undefined) chosen = { ...chosen, nftablesLock: await criuHasFeature(chosen.argv, 'nftables') };
      if (chosen.hugePageFill === undefined) chosen = { ...chosen, hugePageFill: await hugePageFill(chosen, opts) };
      if (chosen.lazyStackExact === undefined) chosen = { ...chosen, lazyStackExact: await lazyStackExact(chosen, opts) };
      if (chosen.argsFromStdin === undefined) chosen = { ...chosen, argsFromStdin: await argsFromStdin(chosen, opts) };
      if (!chosen.postCopy?.ok) {
        await mkdir(opts.workDir, { recursive: true });
        await dropKdatCache();
        opts.log(`probing post-copy (lazy migration) with criu ${chosen.version}`);
        chosen = { ...chosen, postCopy: await probePostCopy(chosen, opts.workDir) };
      }
      await saveSelection(chosen);
      return { chosen, tried: [] };
    }
  }
  await mkdir(opts.workDir, { recursive: true });
  await raisePipeMaxSize(opts.log);
  // A kernel cache the agent made may be from another boot or for another criu (layouts differ); probes go without.
  await dropKdatCache();
  const tried: CandidateReport[] = [];
  const attempt = async (c: ReturnType<typeof candidates>[number]): Promise<CriuBinary | null> => {
    const command = c.argv.join(' ');
    const bin = await describe(c.argv, c.source, c.libdir);
    if (typeof bin === 'string') {
      tried.push({ source: c.source, command, version: null, ok: false, reason: bin });
      return null;
    }
    opts.log(`probing ${c.source} criu ${bin.version} (dump and restore of a TCP connection)`);
    const probe = await probeCriu(bin, opts.workDir);
    tried.push({ source: c.source, command, version: bin.version, ok: probe.ok, reason: probe.ok ? null : probe.reason });
    return probe.ok ? bin : null;
  };
  let chosen: CriuBinary | null = null;
  for (const c of candidates()) {
    if (!c.exists) continue;
    chosen = await attempt(c);
    if (chosen) break;
  }
  if (!chosen && opts.install) {
    opts.log(`installing Debian unstable's criu into ${CRIU_PRIVATE_PREFIX} (the system's libc is left alone)`);
    await run('bash', [INSTALL_SCRIPT, CRIU_PRIVATE_PREFIX], { timeoutMs: 600_000 });
    const priv = candidates().find((c) => c.source === 'private');
    if (priv?.exists) chosen = await attempt(priv);
  }
  if (!chosen) {
    const why = tried.map((t) => `${t.source} ${t.version ?? ''}: ${t.reason}`).join('; ');
    throw new CriuError('criu_unavailable', `no criu on this machine passes the TCP dump/restore probe (${why || 'none found'}); run npm run setup as root`, why);
  }
  opts.log(`probing post-copy (lazy migration) with criu ${chosen.version}`);
  chosen = { ...chosen, postCopy: await probePostCopy(chosen, opts.workDir), hugePageFill: await hugePageFill(chosen, opts), lazyStackExact: await lazyStackExact(chosen, opts), argsFromStdin: await argsFromStdin(chosen, opts) };
  await saveSelection(chosen);
  return { chosen, tried };
}

type ProbeOpts = { workDir: string; log: (msg: string) => void };

/** Runs a probe of what this criu does; where it does not, logs `lacking` and the probe's reason. */
async function probed(bin: CriuBinary, opts: ProbeOpts, probe: (bin: CriuBinary, workDir: string) => Promise<{ ok: boolean; reason: string | null }>, lacking: string): Promise<boolean> {
  await mkdir(opts.workDir, { recursive: true });
  const r = await probe(bin, opts.workDir);
  if (!r.ok) opts.log(`criu ${bin.version} (${bin.source}) ${lacking}: ${r.reason}`);
  return r.ok;
}

const hugePageFill = (bin: CriuBinary, opts: ProbeOpts): Promise<boolean> => probed(bin, opts, probeHugePageFill, 'fills restored memory 4 KiB at a time');
const argsFromStdin = (bin: CriuBinary, opts: ProbeOpts): Promise<boolean> => probed(bin, opts, probeArgsFromStdin, 'is started afresh for each dump and restore (no --args-from-stdin)');
const lazyStackExact = (bin: CriuBinary, opts: ProbeOpts): Promise<boolean> =>
  probed(bin, opts, probeLazyStack, "dumps a process whole in a post-copy move when a thread's stack pointer is page-aligned (such moves go stop-and-copy in auto mode)");

/** What the build in CRIU_BUILD_PREFIX must have been made from: its script and patches. */
async function buildStamp(): Promise<string> {
  const h = createHash('sha256');
  h.update(await readFile(BUILD_SCRIPT));
  for (const name of await patchFiles()) h.update(name).update(await readFile(join(PATCH_DIR, name)));
  return h.digest('hex');
}

/**
 * Builds criu with hubshift's patches into CRIU_BUILD_PREFIX
 * unless a build from the same script and patches is there. True when it built
 * one now. A failed build (no compiler, no network) is reported and leaves
 * the other candidates.
 */
async function ensureBuiltCriu(log: (msg: string) => void): Promise<boolean> {
  const stamp = await buildStamp();
  const have = await readFile(join(CRIU_BUILD_PREFIX, 'STAMP'), 'utf8').catch(() => '');
  if (have.trim() === stamp && existsSync(BUILT_CRIU)) return false;
  log(`building criu 4.2.1 with hubshift's patches (${(await patchFiles()).join(', ')}) into ${CRIU_BUILD_PREFIX} (about a minute; infra/setup/build-criu.sh)`);
  try {
    await run('bash', [BUILD_SCRIPT, CRIU_BUILD_PREFIX, stamp], { timeoutMs: 900_000 });
    return true;
  } catch (err) {
    log(`could not build criu, so another is used (restores fill memory 4 KiB at a time): ${errorMessage(err)}`);
    return false;
  }
}

/** criu's lazy page server needs 4 MiB pipes (see pipe-size.ts); a failure is reported and post-copy's probe then says why. */
async function raisePipeMaxSize(log: (msg: string) => void): Promise<void> {
  try {
    const { before, after } = await ensurePipeMaxSize();
    if (after !== before) log(`raised fs.pipe-max-size from ${before} to ${after} bytes (criu's lazy page server needs 4 MiB pipes)`);
  } catch (err) {
    log(errorMessage(err));
  }
}

async function saveSelection(chosen: CriuBinary): Promise<void> {
  await mkdir(dirname(CRIU_CACHE_FILE), { recursive: true });
  const tmp = `${CRIU_CACHE_FILE}.tmp`;
  await writeFile(tmp, JSON.stringify(chosen, null, 2));
  await rename(tmp, CRIU_CACHE_FILE);
}
