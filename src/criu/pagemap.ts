import { open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CriuError } from '../core/errors.js';

// criu's image framing: two magics, then entries, each a little-endian u32 size and a protobuf message.
const IMG_COMMON_MAGIC = 0x54564319;
const PAGEMAP_MAGIC = 0x56084025;
// pagemap_head: pages_id = 1. pagemap_entry: vaddr = 1, compat_nr_pages = 2, flags = 4, nr_pages = 5 (criu 4).
const FIELD_VADDR = 1;
const FIELD_COMPAT_NR_PAGES = 2;
const FIELD_FLAGS = 4;
const FIELD_NR_PAGES = 5;
// PE_LAZY: a lazy restore leaves the pages to the lazy-pages daemon. PE_PRESENT: they are in the pages image.
const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;
const PAGE = 4096;

function varint(buf: Buffer, at: number, end: number): { value: number; next: number } {
  let value = 0;
  let mul = 1;
  for (let i = at; i < end && i < at + 10; i++) {
    const b = buf[i] as number;
    value += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return { value, next: i + 1 };
  }
  throw new Error(`a truncated varint at byte ${at}`);
}

/** The varint fields of one protobuf message (criu's pagemap messages have no others that matter), by number. */
function fields(buf: Buffer, start: number, end: number): Map<number, { value: number; at: number; width: number }> {
  const out = new Map<number, { value: number; at: number; width: number }>();
  let at = start;
  while (at < end) {
    const tag = varint(buf, at, end);
    at = tag.next;
    switch (tag.value & 7) {
      case 0: {
        const v = varint(buf, at, end);
        out.set(Math.floor(tag.value / 8), { value: v.value, at, width: v.next - at });
        at = v.next;
        break;
      }
      case 1:
        at += 8;
        break;
      case 2: {
        const len = varint(buf, at, end);
        at = len.next + len.value;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        throw new Error(`an unknown protobuf wire type ${tag.value & 7} at byte ${at}`);
    }
  }
  if (at !== end) throw new Error(`a message overruns its entry at byte ${end}`);
  return out;
}

interface PagemapEntry {
  vaddr: number;
  pages: number;
  flags: number;
  /** Where the flags byte is (one byte: criu's flags are below 16), to edit in place. */
  flagsAt: number | null;
}

interface Pagemap {
  path: string;
  buf: Buffer;
  pagesId: number;
  entries: PagemapEntry[];
}

async function readPagemap(imagesDir: string, pid: number): Promise<Pagemap> {
  const path = join(imagesDir, `pagemap-${pid}.img`);
  const buf = await readFile(path);
  try {
    if (buf.length < 8 || buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== PAGEMAP_MAGIC) throw new Error('not a criu pagemap image');
    let at = 8;
    let pagesId = -1;
    const entries: PagemapEntry[] = [];
    for (let i = 0; at < buf.length; i++) {
      if (at + 4 > buf.length) throw new Error(`a truncated entry size at byte ${at}`);
      const end = at + 4 + buf.readUInt32LE(at);
      if (end > buf.length) throw new Error(`entry ${i} overruns the file`);
      const f = fields(buf, at + 4, end);
      at = end;
      // The first entry is the pagemap_head (which pages image); the rest are pagemap_entry.
      if (i === 0) {
        pagesId = f.get(1)?.value ?? -1;
        continue;
      }
      const flags = f.get(FIELD_FLAGS);
      entries.push({
        vaddr: f.get(FIELD_VADDR)?.value ?? 0,
        pages: f.get(FIELD_NR_PAGES)?.value ?? f.get(FIELD_COMPAT_NR_PAGES)?.value ?? 0,
        flags: flags?.value ?? 0,
        flagsAt: flags && flags.width === 1 ? flags.at : null,
      });
    }
    if (pagesId < 0) throw new Error('no pagemap head');
    return { path, buf, pagesId, entries };
  } catch (err) {
    throw new CriuError('criu_failed', `cannot read ${path}: ${(err as Error).message} (an image of another criu version?)`, (err as Error).message, path);
  }
}

/** Writes a pagemap's edited bytes through a new file (never in place: the directory may hold links into a store). */
async function replace(path: string, bytes: Buffer): Promise<void> {
  await writeFile(`${path}.new`, bytes, { mode: 0o600 });
  await rename(`${path}.new`, path);
}

/**
 * Makes a lazy restore bring process `pid`'s dumped memory back eagerly:
 * its pagemap's entries lose PE_LAZY, so criu restore fills them from the
 * pages image itself and the lazy-pages daemon has nothing of it to serve.
 * For the session's server, whose first answer would otherwise wait on the
 * daemon, page by page, between chunks of a kernel's gigabytes. Returns how
 * many entries changed.
 */
export async function restoreEagerly(imagesDir: string, pid: number): Promise<number> {
  const pm = await readPagemap(imagesDir, pid);
  let changed = 0;
  for (const e of pm.entries) {
    if ((e.flags & PE_LAZY) === 0 || (e.flags & PE_PRESENT) === 0 || e.flagsAt === null) continue;
    pm.buf[e.flagsAt] = e.flags & ~PE_LAZY;
    changed++;
  }
  if (changed > 0) await replace(pm.path, pm.buf);
  return changed;
}

/**
 * Post-copy, on the source while criu serves the frozen tree: copies the
 * memory that a lazy dump left out of process `pid`'s images (its entries
 * PE_LAZY and not PE_PRESENT) from the frozen process itself (`hostPid`,
 * through /proc/PID/mem) into its pages image, and marks it present and not
 * lazy. The target then restores that process eagerly from the images and
 * its lazy-pages daemon never asks the source for its pages. Returns the
 * bytes added.
 */
export async function embedLazyMemory(imagesDir: string, pid: number, hostPid: number): Promise<number> {
  const pm = await readPagemap(imagesDir, pid);
  const lazy = pm.entries.filter((e) => (e.flags & PE_LAZY) !== 0 && (e.flags & PE_PRESENT) === 0);
  if (lazy.length === 0) return 0;
  const pagesPath = join(imagesDir, `pages-${pm.pagesId}.img`);
  const src = await open(pagesPath, 'r');
  const mem = await open(`/proc/${hostPid}/mem`, 'r');
  const out = await open(`${pagesPath}.new`, 'w', 0o600);
  let added = 0;
  try {
    let from = 0;
    let to = 0;
    const copy = async (fh: typeof src, position: number, bytes: number, what: string): Promise<void> => {
      const buf = Buffer.allocUnsafe(Math.min(bytes, 8 << 20));
      for (let done = 0; done < bytes; ) {
        const n = Math.min(buf.length, bytes - done);
        const { bytesRead } = await fh.read(buf, 0, n, position + done);
        if (bytesRead !== n) throw new CriuError('criu_failed', `${what}: read ${bytesRead} of ${n} bytes at ${position + done}`, 'short read', pagesPath);
        await out.write(buf, 0, n, to);
        to += n;
        done += n;
      }
    };
    for (const e of pm.entries) {
      const bytes = e.pages * PAGE;
      if ((e.flags & PE_PRESENT) !== 0) {
        await copy(src, from, bytes, `the pages image ${pagesPath}`);
        from += bytes;
      } else if ((e.flags & PE_LAZY) !== 0) {
        if (e.flagsAt === null) throw new CriuError('criu_failed', `a lazy entry of ${pm.path} has no one-byte flags to mark`, 'flags', pm.path);
        await copy(mem, e.vaddr, bytes, `the memory of pid ${hostPid}`);
        pm.buf[e.flagsAt] = (e.flags | PE_PRESENT) & ~PE_LAZY;
        added += bytes;
      }
    }
  } catch (err) {
    await out.close();
    await rm(`${pagesPath}.new`, { force: true });
    throw err;
  } finally {
    await src.close().catch(() => undefined);
    await mem.close().catch(() => undefined);
  }
  await out.close();
  await rename(`${pagesPath}.new`, pagesPath);
  await replace(pm.path, pm.buf);
  return added;
}
