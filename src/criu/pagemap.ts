import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CriuError } from '../core/errors.js';
import { fields, replaceImage as replace } from './image-proto.js';
import { KeptBuffers } from '../util/kept-buffers.js';
import { firstReached } from '../util/sorted-search.js';

// criu's image framing: two magics, then entries, each a little-endian u32 size and a protobuf message (image-proto.ts).
const IMG_COMMON_MAGIC = 0x54564319;
const PAGEMAP_MAGIC = 0x56084025;
// pagemap_head: pages_id = 1. pagemap_entry: vaddr = 1, compat_nr_pages = 2, flags = 4, nr_pages = 5 (criu 4).
const FIELD_VADDR = 1;
const FIELD_COMPAT_NR_PAGES = 2;
const FIELD_FLAGS = 4;
const FIELD_NR_PAGES = 5;
// PE_PARENT: the pages are in the parent image directory's pages image (./parent, criu's incremental dumps).
// PE_LAZY: a lazy restore leaves the pages to the lazy-pages daemon. PE_PRESENT: they are in the pages image.
const PE_PARENT = 1 << 0;
const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;
/** A page of the memory criu dumps (x86-64). */
export const PAGE = 4096;
/** Memory read from a process (or its pages image) is read, sent, kept and compared in runs of this many bytes. */
export const CHUNK_BYTES = 4 << 20;

/** CHUNK_BYTES buffers for reads of a session's memory and its copies, kept from one move to the next (a move takes two at most at a time); warmed at the agent's start. */
export const chunkBuffers = new KeptBuffers(CHUNK_BYTES, 6);

interface PagemapEntry {
  vaddr: number;
  pages: number;
  flags: number;
  /** Where the flags byte is (one byte: criu's flags are below 16), to edit in place. */
  flagsAt: number | null;
  /** The entry's bytes in the image, its size prefix included: [start, end). */
  start: number;
  end: number;
}

interface Pagemap {
  path: string;
  buf: Buffer;
  pagesId: number;
  entries: PagemapEntry[];
}

function readPagemap(imagesDir: string, pid: number): Pagemap {
  return readPagemapFile(join(imagesDir, `pagemap-${pid}.img`));
}

function readPagemapFile(path: string): Pagemap {
  const buf = readFileSync(path);
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
      const start = at;
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
        start,
        end,
      });
    }
    if (pagesId < 0) throw new Error('no pagemap head');
    return { path, buf, pagesId, entries };
  } catch (err) {
    throw new CriuError('criu_failed', `cannot read ${path}: ${(err as Error).message} (an image of another criu version?)`, (err as Error).message, path);
  }
}

/** What criu itself wrote of one process's memory into its images: the bytes, and the largest run of them. */
export interface WrittenPages {
  bytes: number;
  largest: { vaddr: string; bytes: number } | null;
}

/**
 * What a dump wrote of each process's memory itself (its pagemap's present
 * entries), by pid in the session, for processes of which it wrote at least
 * `atLeast` bytes. A lazy dump writes only a few pages eagerly (a private
 * file mapping's written ones, each thread's stack page): a move's account
 * says so when it wrote more. A pagemap that cannot be read is left out.
 */
export function pagesWritten(imagesDir: string, atLeast = 0): Record<string, WrittenPages> {
  const out: Record<string, WrittenPages> = {};
  let names: string[];
  try {
    names = readdirSync(imagesDir);
  } catch {
    return out;
  }
  for (const n of names) {
    const pid = /^pagemap-(\d+)\.img$/.exec(n)?.[1];
    if (pid === undefined) continue;
    let entries: PagemapEntry[];
    try {
      entries = readPagemapFile(join(imagesDir, n)).entries;
    } catch {
      continue;
    }
    const present = entries.filter((e) => (e.flags & PE_PRESENT) !== 0);
    const bytes = present.reduce((a, e) => a + e.pages * PAGE, 0);
    if (bytes < atLeast) continue;
    const top = present.reduce<PagemapEntry | null>((a, e) => (a === null || e.pages > a.pages ? e : a), null);
    out[pid] = { bytes, largest: top && { vaddr: `0x${top.vaddr.toString(16)}`, bytes: top.pages * PAGE } };
  }
  return out;
}

/**
 * The page images a dump's pagemaps refer to (pagemap-PID.img for each
 * process, pagemap-shmem-ID.img for shared memory), by file name.
 */
export async function pageImagesInUse(imagesDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const n of await readdir(imagesDir)) {
    if (!/^pagemap-.*\.img$/.test(n)) continue;
    out.add(`pages-${readPagemapFile(join(imagesDir, n)).pagesId}.img`);
  }
  return out;
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
  const pm = readPagemap(imagesDir, pid);
  let changed = 0;
  for (const e of pm.entries) {
    if ((e.flags & PE_LAZY) === 0 || (e.flags & PE_PRESENT) === 0 || e.flagsAt === null) continue;
    pm.buf[e.flagsAt] = e.flags & ~PE_LAZY;
    changed++;
  }
  if (changed > 0) replace(pm.path, pm.buf);
  return changed;
}

/**
 * Makes a lazy restore bring these pages of process `pid` back eagerly (page
 * addresses, sorted, each once): each lazy entry holding some of them is
 * split at their edges, the runs of them losing PE_LAZY, the rest staying
 * lazy. The pages image is untouched: the entries still cover its pages in
 * order. For the pages a kernel asked for first after its last restore
 * (agent/hot-pages.ts), which would otherwise each wait on the daemon.
 * Returns how many pages became eager; a pagemap with none of them is left
 * alone.
 */
export function restorePagesEagerly(imagesDir: string, pid: number, pages: readonly number[]): number {
  return splitLazyEntries(imagesDir, pid, pages, (e) => (e.flags & PE_PRESENT) !== 0, PE_LAZY);
}

/**
 * Post-copy, in a lazy dump's images: splits the entries a lazy dump left
 * out (lazyRuns) at the edges of these pages of process `pid` (page
 * addresses, sorted, each once), each run of them an entry of its own, still
 * lazy, so that embedLazyMemory can take those runs alone: the pages the
 * kernel asked for first after its last restore or move go with the images,
 * the rest of their mappings stays lazy. Returns how many pages lie in such
 * runs; a pagemap with none of them is left alone.
 */
export function splitLazyRuns(imagesDir: string, pid: number, pages: readonly number[]): number {
  return splitLazyEntries(imagesDir, pid, pages, isLazy, 0);
}

/**
 * Splits each entry of process `pid`'s pagemap that `which` selects and
 * that holds some of `pages` (sorted, each once) at their edges; the runs of
 * them lose the flags `clear`. Returns how many pages lie in such runs.
 */
function splitLazyEntries(imagesDir: string, pid: number, pages: readonly number[], which: (e: PagemapEntry) => boolean, clear: number): number {
  const pm = readPagemap(imagesDir, pid);
  const parts: Buffer[] = [];
  // The bytes up to here (the head, entries left as they are) go on unchanged.
  let kept = 0;
  let taken = 0;
  for (const e of pm.entries) {
    if ((e.flags & PE_LAZY) === 0 || !which(e)) continue;
    const end = e.vaddr + e.pages * PAGE;
    const runs = [...pageRunsIn(pages, e.vaddr, end)];
    if (runs.length === 0) continue;
    parts.push(pm.buf.subarray(kept, e.start));
    kept = e.end;
    // Alternate runs: as it was up to the next of the pages, then across consecutive ones.
    let at = e.vaddr;
    for (const r of runs) {
      if (r.vaddr > at) parts.push(encodeEntry(at, (r.vaddr - at) / PAGE, e.flags));
      parts.push(encodeEntry(r.vaddr, r.pages, e.flags & ~clear));
      taken += r.pages;
      at = r.vaddr + r.pages * PAGE;
    }
    if (at < end) parts.push(encodeEntry(at, (end - at) / PAGE, e.flags));
  }
  if (taken === 0) return 0;
  parts.push(pm.buf.subarray(kept));
  replace(pm.path, Buffer.concat(parts));
  return taken;
}

/** A process's pages image as the move sends it: the image's own pages and, in their place, the memory a lazy dump left out. */
export interface EmbeddedPages {
  /** The pages image's name in the image directory. */
  name: string;
  /** Its bytes, with the memory added. */
  bytes: number;
  /** Bytes of memory read from the process. */
  added: number;
  /** Bytes of memory left to the parent image: sent before the freeze and unchanged since. */
  inParent: number;
  /**
   * Its bytes in pagemap order, read as they are asked for into one reused
   * buffer: a chunk is valid until the next is asked for (copy it to keep it).
   */
  read(): AsyncGenerator<Buffer>;
}

/** A run of a process's memory, whole pages: a post-copy move's memory copied ahead, as its parent image holds it. */
export interface MemoryRun {
  vaddr: number;
  bytes: number;
}

/** Part of a chosen entry: pages the parent image holds as they are now, or pages to read from the process. */
interface Span {
  vaddr: number;
  pages: number;
  inParent: boolean;
}

/** Where the bytes of a pages image as sent come from, in order: criu's image, or the frozen process. */
interface Piece {
  from: 'image' | 'memory';
  position: number;
  bytes: number;
}

/**
 * Post-copy, on the source while criu serves the frozen tree: memory that
 * a lazy dump left out of process `pid`'s images (its entries PE_LAZY and
 * not PE_PRESENT), to be read from the frozen process itself (`hostPid`,
 * through /proc/PID/mem) straight into the move stream, in place in its
 * pages image. Its pagemap is rewritten at once with those entries present
 * and not lazy, so the target restores them eagerly and its lazy-pages
 * daemon never asks the source for them. `take` chooses the entries (all
 * lazy ones when unset).
 *
 * `parent`: the process's memory as copied before the freeze and sent ahead
 * as its parent image (its runs, sorted by address), and the addresses of
 * the pages found changed since (memory-precopy.ts compares them). The
 * pages it holds unchanged become PE_PARENT entries, which criu restores
 * from ./parent, and are not sent again: of the lazy entries, and of criu's
 * own present ones (the rest of those is sent from its image, as it is).
 *
 * Every chosen range is checked readable first: if one is not, nothing is
 * changed and this throws. null when nothing is chosen and the parent holds
 * none of the present entries.
 */
export async function embedLazyMemory(
  imagesDir: string,
  pid: number,
  hostPid: number,
  take?: (run: LazyRun) => boolean,
  parent: { runs: readonly MemoryRun[]; changed: ReadonlySet<number> } = { runs: [], changed: new Set() },
): Promise<EmbeddedPages | null> {
  const pm = readPagemap(imagesDir, pid);
  const chosen = new Set(pm.entries.filter((e) => isLazy(e) && (take?.(runOf(pid, e)) ?? true)));
  // criu's own present entries (a private file mapping's written pages, a thread's stack page) the parent holds part of.
  const ownInParent = new Set(pm.entries.filter((e) => (e.flags & PE_PRESENT) !== 0 && overlapsRun(parent.runs, e)));
  if (chosen.size === 0 && ownInParent.size === 0) return null;
  const name = `pages-${pm.pagesId}.img`;
  const pagesPath = join(imagesDir, name);
  const memPath = `/proc/${hostPid}/mem`;
  // Synchronously: a few microseconds a page, where a server's 200-odd runs read through the thread pool took
  // 25-40 ms of round trips while the session was frozen.
  const spans = new Map<PagemapEntry, Span[]>();
  const changed = [...parent.changed].sort((a, b) => a - b);
  const mem = openSync(memPath, 'r');
  try {
    for (const e of chosen) {
      if (e.flagsAt === null) throw new CriuError('criu_failed', `a lazy entry of ${pm.path} has no one-byte flags to mark`, 'flags', pm.path);
      spans.set(e, spansOf(mem, memPath, e, parent.runs, changed, true));
    }
    // Their pages not left to the parent are in criu's image: nothing of them is read from the process.
    for (const e of ownInParent) spans.set(e, spansOf(mem, memPath, e, parent.runs, changed, false));
  } finally {
    closeSync(mem);
  }
  const imageBytes = statSync(pagesPath).size;
  // The pagemap as criu wrote it, its chosen entries present (or split into parent and present parts).
  const parts: Buffer[] = [pm.buf.subarray(0, pm.entries[0]?.start ?? pm.buf.length)];
  const pieces: Piece[] = [];
  // fromParent: of criu's own pages, those left to the parent.
  let [fromImage, added, inParent, fromParent] = [0, 0, 0, 0];
  for (const e of pm.entries) {
    const split = spans.get(e);
    if (!split) {
      parts.push(pm.buf.subarray(e.start, e.end));
      if ((e.flags & PE_PRESENT) !== 0) {
        pieces.push({ from: 'image', position: fromImage, bytes: e.pages * PAGE });
        fromImage += e.pages * PAGE;
      }
      continue;
    }
    const own = (e.flags & PE_PRESENT) !== 0;
    if (split.length === 1 && !(split[0] as Span).inParent) {
      const entry = Buffer.from(pm.buf.subarray(e.start, e.end));
      if (!own) entry[(e.flagsAt as number) - e.start] = (e.flags | PE_PRESENT) & ~PE_LAZY;
      parts.push(entry);
    } else {
      for (const x of split) parts.push(encodeEntry(x.vaddr, x.pages, x.inParent ? PE_PARENT : own ? e.flags : PE_PRESENT));
    }
    for (const x of split) {
      if (x.inParent) {
        inParent += x.pages * PAGE;
        if (own) fromParent += x.pages * PAGE;
      } else if (own) pieces.push({ from: 'image', position: fromImage + (x.vaddr - e.vaddr), bytes: x.pages * PAGE });
      else {
        pieces.push({ from: 'memory', position: x.vaddr, bytes: x.pages * PAGE });
        added += x.pages * PAGE;
      }
    }
    if (own) fromImage += e.pages * PAGE;
  }
  replace(pm.path, Buffer.concat(parts));
  return { name, bytes: imageBytes - fromParent + added, added, inParent, read: () => readPieces(pieces, pagesPath, memPath) };
}

/**
 * A chosen entry's pages in order, as spans: those the parent holds (`runs`)
 * and `changed` (page addresses, ascending) does not name, and the rest,
 * run by run rather than page by page (tens of thousands of pages a move,
 * in the frozen window). With `checkReadable` (the spans not in the parent
 * are read from the process) the first page of each span is read, to know
 * the entry readable.
 */
function spansOf(fd: number, memPath: string, e: PagemapEntry, runs: readonly MemoryRun[], changed: readonly number[], checkReadable: boolean): Span[] {
  const page = Buffer.allocUnsafe(PAGE);
  const out: Span[] = [];
  const add = (vaddr: number, pages: number, inParent: boolean): void => {
    if (pages <= 0) return;
    const last = out.at(-1);
    if (last && last.inParent === inParent && last.vaddr + last.pages * PAGE === vaddr) {
      last.pages += pages;
      return;
    }
    if (!checkReadable) return void out.push({ vaddr, pages, inParent });
    let got = 0;
    try {
      got = readSync(fd, page, 0, PAGE, vaddr);
    } catch {
      /* unreadable: said below */
    }
    if (got !== PAGE) throw new CriuError('criu_failed', `the memory at 0x${vaddr.toString(16)} cannot be read (${memPath})`, 'short read', memPath);
    out.push({ vaddr, pages, inParent });
  };
  const end = e.vaddr + e.pages * PAGE;
  let at = e.vaddr;
  for (let i = firstEndingAfter(runs, at); i < runs.length && at < end; i++) {
    const r = runs[i] as MemoryRun;
    const [from, to] = [Math.max(r.vaddr, at), Math.min(r.vaddr + r.bytes, end)];
    if (from >= end) break;
    add(at, (from - at) / PAGE, false);
    // The run's pages, but for those changed since the copy.
    let p = from;
    for (let c = firstAtOrAfter(changed, from); c < changed.length && (changed[c] as number) < to; c++) {
      const addr = changed[c] as number;
      add(p, (addr - p) / PAGE, true);
      add(addr, 1, false);
      p = addr + PAGE;
    }
    add(p, (to - p) / PAGE, true);
    at = to;
  }
  add(at, (end - at) / PAGE, false);
  return out;
}

/** Whether any of `runs` (sorted, not overlapping) holds a page of entry `e`. */
function overlapsRun(runs: readonly MemoryRun[], e: PagemapEntry): boolean {
  const r = runs[firstEndingAfter(runs, e.vaddr)];
  return r !== undefined && r.vaddr < e.vaddr + e.pages * PAGE;
}

/** The index of the first of `sorted` (ascending) at or after `addr`. */
function firstAtOrAfter(sorted: readonly number[], addr: number): number {
  return firstReached(sorted.length, (i) => (sorted[i] as number) >= addr);
}

/**
 * The runs of consecutive pages among `sorted` (page addresses, ascending,
 * each once) that lie in [start, end), in order.
 */
export function* pageRunsIn(sorted: readonly number[], start: number, end: number): Generator<{ vaddr: number; pages: number }> {
  let i = firstAtOrAfter(sorted, start);
  while (i < sorted.length && (sorted[i] as number) < end) {
    const vaddr = sorted[i] as number;
    let pages = 1;
    while (++i < sorted.length && sorted[i] === vaddr + pages * PAGE && vaddr + pages * PAGE < end) pages++;
    yield { vaddr, pages };
  }
}

/** The index of the first run (sorted, not overlapping) that ends after `addr`. */
function firstEndingAfter(runs: readonly MemoryRun[], addr: number): number {
  return firstReached(runs.length, (i) => (runs[i] as MemoryRun).vaddr + (runs[i] as MemoryRun).bytes > addr);
}

function encodeVarint(n: number, out: number[]): void {
  while (n >= 128) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

/** One pagemap entry framed as criu 4 writes it: vaddr, compat_nr_pages 0, flags, nr_pages. */
function encodeEntry(vaddr: number, pages: number, flags: number): Buffer {
  const msg: number[] = [0x08];
  encodeVarint(vaddr, msg);
  msg.push(0x10, 0x00, 0x20);
  encodeVarint(flags, msg);
  msg.push(0x28);
  encodeVarint(pages, msg);
  const b = Buffer.alloc(4 + msg.length);
  b.writeUInt32LE(msg.length, 0);
  Buffer.from(msg).copy(b, 4);
  return b;
}

/**
 * A parent image of one process for a post-copy move's pre-copy: a pagemap
 * whose entries are the runs, all present, in a pages image of its own
 * (`pages-ID.img`, ID the process's pid: one directory holds every
 * process's). The runs must be sorted and apart.
 */
export function parentPagemap(pid: number, runs: readonly MemoryRun[]): Buffer {
  const head: number[] = [0x08];
  encodeVarint(pid, head);
  const frame = Buffer.alloc(4);
  frame.writeUInt32LE(head.length, 0);
  return Buffer.concat([u32le(IMG_COMMON_MAGIC), u32le(PAGEMAP_MAGIC), frame, Buffer.from(head), ...runs.map((r) => encodeEntry(r.vaddr, r.bytes / PAGE, PE_PRESENT))]);
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/** A run of memory a lazy dump left to the lazy-pages daemon. */
export interface LazyRun {
  pid: number;
  vaddr: number;
  bytes: number;
}

function isLazy(e: PagemapEntry): boolean {
  return (e.flags & PE_LAZY) !== 0 && (e.flags & PE_PRESENT) === 0;
}

function runOf(pid: number, e: PagemapEntry): LazyRun {
  return { pid, vaddr: e.vaddr, bytes: e.pages * PAGE };
}

/** The runs of memory a lazy dump left out of process `pid`'s images. */
export async function lazyRuns(imagesDir: string, pid: number): Promise<LazyRun[]> {
  const pm = readPagemap(imagesDir, pid);
  return pm.entries.filter(isLazy).map((e) => runOf(pid, e));
}

async function* readPieces(pieces: readonly Piece[], pagesPath: string, memPath: string): AsyncGenerator<Buffer> {
  const src = await open(pagesPath, 'r');
  const mem = await open(memPath, 'r');
  // One buffer for every chunk: a new one each time was memory never touched, and filling it cost more than
  // reading the process (70 MB read in 0.18-0.21 s in a post-copy move, where /proc/PID/mem gives 4 GB/s).
  const buf = chunkBuffers.take();
  // The runs are filled into it back to back, read synchronously: a server's 200-odd runs, most of a few pages,
  // each read through the thread pool, took 0.06-0.16 s of round trips for 72 MB; a full chunk is about 1 ms
  // of copying on this thread.
  let filled = 0;
  try {
    for (const p of pieces) {
      const [fd, what] = p.from === 'image' ? [src.fd, pagesPath] : [mem.fd, memPath];
      let position = p.position;
      let left = p.bytes;
      while (left > 0) {
        const n = Math.min(CHUNK_BYTES - filled, left);
        const got = readSync(fd, buf, filled, n, position);
        if (got !== n) throw new CriuError('criu_failed', `${what}: read ${got} of ${n} bytes at ${position}`, 'short read', what);
        filled += n;
        position += n;
        left -= n;
        if (filled === CHUNK_BYTES) {
          yield buf;
          filled = 0;
        }
      }
    }
    if (filled > 0) yield buf.subarray(0, filled);
  } finally {
    await src.close().catch(() => undefined);
    await mem.close().catch(() => undefined);
    chunkBuffers.giveBack(buf);
  }
}
