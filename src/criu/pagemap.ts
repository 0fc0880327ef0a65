import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CriuError } from '../core/errors.js';

// criu's image framing: two magics, then entries, each a little-endian u32 size and a protobuf message.
const IMG_COMMON_MAGIC = 0x54564319;
const PAGEMAP_MAGIC = 0x56084025;
// pagemap_entry.flags is field 4; PE_LAZY marks pages a lazy restore leaves to the lazy-pages daemon.
const FLAGS_TAG = (4 << 3) | 0;
const PE_LAZY = 1 << 1;

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

/** Clears PE_LAZY in one pagemap_entry message, in place; whether it was set. */
function clearLazy(buf: Buffer, start: number, end: number): boolean {
  let at = start;
  let cleared = false;
  while (at < end) {
    const tag = varint(buf, at, end);
    at = tag.next;
    switch (tag.value & 7) {
      case 0: {
        const v = varint(buf, at, end);
        // Flags fit one byte (criu's are below 16), so the edit keeps every length.
        if (tag.value === FLAGS_TAG && v.next === at + 1 && (v.value & PE_LAZY) !== 0) {
          buf[at] = v.value & ~PE_LAZY;
          cleared = true;
        }
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
  return cleared;
}

/**
 * Makes a lazy restore bring process `pid`'s dumped memory back eagerly:
 * its pagemap's entries lose PE_LAZY, so criu restore fills them from the
 * pages image itself and the lazy-pages daemon has nothing of it to serve.
 * For the session's server, whose first answer would otherwise wait on the
 * daemon, page by page, between chunks of a kernel's gigabytes. Rewrites
 * `pagemap-<pid>.img` through a new file (never in place: the directory may
 * hold links into a store). Returns how many entries changed.
 */
export async function restoreEagerly(imagesDir: string, pid: number): Promise<number> {
  const path = join(imagesDir, `pagemap-${pid}.img`);
  const buf = await readFile(path);
  let changed = 0;
  try {
    if (buf.length < 8 || buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== PAGEMAP_MAGIC) throw new Error('not a criu pagemap image');
    let at = 8;
    // The first entry is the pagemap_head (which pages image); the rest are pagemap_entry.
    for (let i = 0; at < buf.length; i++) {
      if (at + 4 > buf.length) throw new Error(`a truncated entry size at byte ${at}`);
      const size = buf.readUInt32LE(at);
      const end = at + 4 + size;
      if (end > buf.length) throw new Error(`entry ${i} overruns the file`);
      if (i > 0 && clearLazy(buf, at + 4, end)) changed++;
      at = end;
    }
  } catch (err) {
    throw new CriuError('criu_failed', `cannot read ${path}: ${(err as Error).message} (an image of another criu version?)`, (err as Error).message, path);
  }
  if (changed > 0) {
    await writeFile(`${path}.eager`, buf, { mode: 0o600 });
    await rename(`${path}.eager`, path);
  }
  return changed;
}
