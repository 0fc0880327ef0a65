import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CriuError } from '../../src/core/errors.js';
import { dump, restore, type FileValidation } from '../../src/criu/driver.js';
import { startIsolatedPython, stopProcesses } from '../../src/criu/probe.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { isAlive } from '../../src/util/proc.js';

/** The byte offset of an ELF64 file's GNU build-id (the NT_GNU_BUILD_ID note's descriptor). */
function buildIdOffset(elf: Buffer): number {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const start = Number(elf.readBigUInt64LE(ph + 8));
    const end = start + Number(elf.readBigUInt64LE(ph + 32));
    for (let n = start; n + 12 <= end; ) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const desc = n + 12 + Math.ceil(namesz / 4) * 4;
      if (elf.readUInt32LE(n + 8) === 3) return desc; // NT_GNU_BUILD_ID
      n = desc + Math.ceil(descsz / 4) * 4;
    }
  }
  throw new Error('no build-id note');
}

// A library rebuilt with the same size: what `--file-validation filesize` (the agent's default) lets through and
// `buildid` refuses. The test pins both, so the trade-off README states stays true of the criu in use.
describe('criu file validation', () => {
  let dir: string;
  const pids: number[] = [];
  let images: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-filevalidation-'));
    const lib = join(dir, 'libz-copy.so');
    await copyFile('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', lib);
    const p = await startIsolatedPython(dir, 'hold', `import ctypes, sys, time\nctypes.CDLL(sys.argv[1])\nprint('ready', flush=True)\nwhile True: time.sleep(3600)\n`, [lib]);
    pids.push(...p.pids);
    images = join(dir, 'images');
    // Build-ids are recorded only when dumped with buildid; a restore checks whatever was recorded.
    await dump(await loadSelectedCriu(), { pid: p.init, imagesDir: images, logFile: join(dir, 'dump.log'), timeoutMs: 60_000, fileValidation: 'buildid' });
    const bytes = await readFile(lib);
    const at = buildIdOffset(bytes);
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
    await writeFile(lib, bytes);
  });

  afterAll(async () => {
    await stopProcesses(pids);
    await rm(dir, { recursive: true, force: true });
  });

  const restoreWith = async (fileValidation: FileValidation): Promise<number> => {
    const r = await restore(await loadSelectedCriu(), { imagesDir: images, logFile: join(dir, `restore-${fileValidation}.log`), pidFile: join(dir, `${fileValidation}.pid`), timeoutMs: 60_000, fileValidation });
    pids.push(r.pid);
    return r.pid;
  };

  it('should refuse a mapped library of the same size but another build-id with buildid, naming the file', async () => {
    const err = await restoreWith('buildid').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CriuError);
    expect((err as CriuError).message).toContain('libz-copy.so is another build than at the dump');
  });

  it('should let it through with filesize, which checks size and mode only', async () => {
    const pid = await restoreWith('filesize');
    expect(await isAlive(pid)).toBe(true);
  });
});
