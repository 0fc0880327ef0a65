import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CheckpointManifest } from '../core/checkpoint.js';
import { MissingBlobError, NotFoundError, StoreError, UncommittedCheckpointError, errorMessage } from '../core/errors.js';
import { pathExists } from '../util/fs.js';
import type { ImageStore } from './image-store.js';
import { parseManifest } from './manifest.js';
import { safeBlobName, safeCheckpointId } from './names.js';

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Checkpoints in a local directory, the embedded default:
 * ROOT/<checkpoint>/blobs/<name> and ROOT/<checkpoint>/manifest.json, owner-only.
 * Every file is fsynced and renamed into place, so a crash leaves either the
 * whole blob or none of it.
 */
export class DirImageStore implements ImageStore {
  readonly location: string;
  constructor(private readonly root: string) {
    this.location = `dir:${root}`;
  }

  forUser(): DirImageStore {
    return this;
  }

  private ckptDir(id: string): string {
    return join(this.root, safeCheckpointId(id));
  }

  private blobPath(id: string, name: string): string {
    return join(this.ckptDir(id), 'blobs', safeBlobName(name));
  }

  private async prepare(id: string): Promise<void> {
    await mkdir(join(this.ckptDir(id), 'blobs'), { recursive: true, mode: 0o700 });
  }

  async putBlob(id: string, name: string, body: Readable, signal?: AbortSignal): Promise<void> {
    await this.prepare(id);
    const final = this.blobPath(id, name);
    const partial = `${final}.partial`;
    try {
      await pipeline(body, createWriteStream(partial, { mode: 0o600 }), { signal });
      await fsyncPath(partial);
      await rename(partial, final);
    } catch (err) {
      await rm(partial, { force: true });
      throw new StoreError(`writing blob ${name} of ${id} to ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  async putBlobFile(id: string, name: string, path: string, signal?: AbortSignal): Promise<void> {
    await this.prepare(id);
    const final = this.blobPath(id, name);
    try {
      // Same filesystem: a hard link makes the image file the blob without a copy.
      await rm(final, { force: true });
      await link(path, final);
      await fsyncPath(final);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EXDEV' && code !== 'EPERM') throw new StoreError(`linking ${path} into ${this.location} failed: ${errorMessage(err)}`, { cause: err });
    }
    await this.putBlob(id, name, createReadStream(path, { highWaterMark: 4 << 20 }), signal);
  }

  async openBlob(id: string, name: string): Promise<Readable> {
    const p = this.blobPath(id, name);
    if (!(await pathExists(p))) throw new MissingBlobError(id, name, this.location);
    return createReadStream(p, { highWaterMark: 4 << 20 });
  }

  localBlobPath(id: string, name: string): string | null {
    return this.blobPath(id, name);
  }

  async putManifest(m: CheckpointManifest): Promise<void> {
    await this.prepare(m.id);
    const final = join(this.ckptDir(m.id), 'manifest.json');
    const partial = `${final}.partial`;
    const fh = await open(partial, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(m, null, 2));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(partial, final);
    await fsyncPath(this.ckptDir(m.id));
  }

  async getManifest(id: string): Promise<CheckpointManifest> {
    const dir = this.ckptDir(id);
    let text: string;
    try {
      text = await readFile(join(dir, 'manifest.json'), 'utf8');
    } catch {
      if (await pathExists(dir)) throw new UncommittedCheckpointError(id, this.location);
      throw new NotFoundError(`no checkpoint ${id} in ${this.location}`);
    }
    return parseManifest(id, text, this.location);
  }

  async list(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const e of entries.sort()) {
      if (await pathExists(join(this.root, e, 'manifest.json'))) out.push(e);
    }
    return out;
  }

  async delete(id: string): Promise<void> {
    // The manifest goes first, so a half-deleted checkpoint is never taken as committed.
    await unlink(join(this.ckptDir(id), 'manifest.json')).catch(() => undefined);
    await rm(this.ckptDir(id), { recursive: true, force: true });
  }
}
