import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CriuError } from '../core/errors.js';
import { fields, replaceImage } from './image-proto.js';

// inventory.img: one magic, then one inventory_entry, whose field 11 is the network lock method the dump used
// (criu's enum: iptables 0, nftables 1, skip 2). A restore takes its method from there, not from its own options.
const INVENTORY_MAGIC = 0x58313116;
const FIELD_NETWORK_LOCK_METHOD = 11;
const NETWORK_LOCK_SKIP = 2;

/**
 * Tells criu restore that nothing of criu's locks the network it restores
 * into. Used where the agent made the session's namespace itself and holds
 * its bridge end down while criu restores (our own lock): criu did not lock
 * that namespace, yet it would still delete its nftables table there at the
 * end, and the failing delete (an nftables transaction, aborted) cost 12-20 ms
 * of every restore's and move's downtime here. Returns whether the image
 * changed (false when it says skip already, or names no method).
 */
export async function skipNetworkUnlock(imagesDir: string): Promise<boolean> {
  const path = join(imagesDir, 'inventory.img');
  const buf = readFileSync(path);
  let method: { value: number; at: number; width: number } | undefined;
  try {
    if (buf.length < 8 || buf.readUInt32LE(0) !== INVENTORY_MAGIC) throw new Error('not a criu inventory image');
    const end = 8 + buf.readUInt32LE(4);
    if (end > buf.length) throw new Error('its entry overruns the file');
    method = fields(buf, 8, end).get(FIELD_NETWORK_LOCK_METHOD);
  } catch (err) {
    throw new CriuError('criu_failed', `cannot read ${path}: ${(err as Error).message} (an image of another criu version?)`, (err as Error).message, path);
  }
  if (!method || method.value === NETWORK_LOCK_SKIP || method.width !== 1) return false;
  buf[method.at] = NETWORK_LOCK_SKIP;
  replaceImage(path, buf);
  return true;
}
