import { createWriteStream } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { MoveManifest, type MoveFile } from '../core/checkpoint.js';
import { IntegrityError, describeZodIssue } from '../core/errors.js';
import { HashingStream } from './hashing.js';
import { packTar, type PackEntry } from './tar-pack.js';

const MANIFEST_ENTRY = 'manifest.json';
const MAX_MANIFEST_BYTES = 4 << 20;

/** The stream a source sends: the manifest first, then every file it names. */
export function packMove(manifest: MoveManifest, files: readonly PackEntry[]): Readable {
  return packTar(files, { name: MANIFEST_ENTRY, content: Buffer.from(JSON.stringify(manifest)) });
}

/**
 * Receives a move stream into `dest`: the manifest first (parsed), then each
 * file, written while hashed; every file must be one the manifest names, with
 * its size and sha256, and every one it names must come. Throws
 * IntegrityError otherwise; nothing partial is trusted.
 */
export async function receiveMove(source: Readable, dest: string): Promise<MoveManifest> {
  const extract = tar.extract();
  let manifest: MoveManifest | null = null;
  const expected = new Map<string, MoveFile>();
  const got = new Set<string>();
  const done = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name;
      if (entry.header.type !== 'file') throw new IntegrityError(`move stream holds ${name}, which is not a plain file`);
      if (!manifest) {
        if (name !== MANIFEST_ENTRY || (entry.header.size ?? 0) > MAX_MANIFEST_BYTES) throw new IntegrityError(`move stream must begin with ${MANIFEST_ENTRY}, not ${name}`);
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        let json: unknown;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          throw new IntegrityError('move manifest is not JSON');
        }
        const r = MoveManifest.safeParse(json);
        if (!r.success) throw new IntegrityError(`move manifest refused at ${describeZodIssue(r.error)}`);
        manifest = r.data;
        for (const f of manifest.files) expected.set(f.name, f);
        continue;
      }
      const want = expected.get(name);
      if (!want || got.has(name)) throw new IntegrityError(`move stream holds ${name}, which its manifest does not name (or names once)`);
      const target = join(dest, name);
      await mkdir(dirname(target), { recursive: true });
      const hasher = new HashingStream();
      await pipeline(entry, hasher, createWriteStream(target, { mode: 0o600 }));
      await chmod(target, (entry.header.mode ?? 0o600) & 0o777);
      const d = hasher.digest();
      if (d.bytes !== want.bytes || d.sha256 !== want.sha256) {
        throw new IntegrityError(`move stream: ${name} arrived as ${d.bytes} bytes with sha256 ${d.sha256.slice(0, 12)}, not ${want.bytes} bytes ${want.sha256.slice(0, 12)}; refused before criu`);
      }
      got.add(name);
    }
  })();
  await Promise.all([pipeline(source, extract), done]);
  if (!manifest) throw new IntegrityError('move stream ended before its manifest');
  const missing = [...expected.keys()].filter((n) => !got.has(n));
  if (missing.length) throw new IntegrityError(`move stream ended without ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ` and ${missing.length - 3} more` : ''}`);
  return manifest;
}
