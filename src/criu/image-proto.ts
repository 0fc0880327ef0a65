import { renameSync, writeFileSync } from 'node:fs';

// criu's images: one or two magics (u32, little-endian), then entries, each a u32 size and a protobuf message.
// hubshift reads and edits only varint fields of them, in place where the width stays.

export function varint(buf: Buffer, at: number, end: number): { value: number; next: number } {
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

/** The varint fields of one protobuf message (the only ones hubshift reads or edits), by number, with where each value lies. */
export function fields(buf: Buffer, start: number, end: number): Map<number, { value: number; at: number; width: number }> {
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

/**
 * Writes an image's edited bytes through a new file (never in place: the directory may hold links into a store).
 * Synchronously, as the images are read: a few KB each, edited in a move's frozen window or just before a restore.
 */
export function replaceImage(path: string, bytes: Buffer): void {
  writeFileSync(`${path}.new`, bytes, { mode: 0o600 });
  renameSync(`${path}.new`, path);
}
