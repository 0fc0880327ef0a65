import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileDigest } from '../core/checkpoint.js';
import { sleep } from '../util/exec.js';
import { PieceHasher } from './hashing.js';

export interface GrowingFileHasherOptions {
  /** Which files to follow. */
  match: RegExp;
  /** fdatasync after this many new bytes, so the disk writes while criu dumps. Default 16 MiB; 0 turns it off. */
  syncEveryBytes?: number;
  /** How often to look for new files and new bytes. Default 5 ms. */
  pollMs?: number;
  /** Called with each run of new bytes hashed (progress). */
  onBytes?: (n: number) => void;
}

/**
 * Hashes files while another process writes them: criu writes each page
 * image once, front to back, so bytes before the current end are final. Each
 * matching file in the directory is followed from its start, hashed as it
 * grows, and flushed to disk in steps. `finish()` is called once the writer
 * has exited; it reads what is left and returns each file's digest. The
 * caller must check the digest's size against the file's (a writer that
 * rewrote bytes would be caught there and by restore's verification).
 */
export class GrowingFileHasher {
  private readonly followers = new Map<string, Promise<FileDigest>>();
  private writerDone = false;
  private scanning: Promise<void> | undefined;
  private readonly syncEvery: number;
  private readonly pollMs: number;

  constructor(
    private readonly dir: string,
    private readonly opts: GrowingFileHasherOptions,
  ) {
    this.syncEvery = opts.syncEveryBytes ?? 16 << 20;
    this.pollMs = opts.pollMs ?? 5;
  }

  start(): this {
    this.scanning = (async () => {
      while (!this.writerDone) {
        await this.scan();
        await sleep(this.pollMs);
      }
      await this.scan();
    })();
    return this;
  }

  private async scan(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return; // not created yet
    }
    for (const n of names) {
      if (this.opts.match.test(n) && !this.followers.has(n)) {
        const p = this.follow(join(this.dir, n));
        p.catch(() => undefined); // awaited in finish()
        this.followers.set(n, p);
      }
    }
  }

  private async follow(path: string): Promise<FileDigest> {
    const fh: FileHandle = await open(path, 'r');
    const hash = new PieceHasher();
    const buf = Buffer.allocUnsafe(4 << 20);
    let pos = 0;
    let unsynced = 0;
    let syncing: Promise<void> = Promise.resolve();
    try {
      for (;;) {
        const done = this.writerDone; // read before the read: EOF after done is the true end
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead > 0) {
          hash.update(buf.subarray(0, bytesRead));
          pos += bytesRead;
          this.opts.onBytes?.(bytesRead);
          unsynced += bytesRead;
          if (this.syncEvery > 0 && unsynced >= this.syncEvery) {
            unsynced = 0;
            // One flush in flight at a time, overlapping the next reads.
            syncing = syncing.then(() => fh.datasync());
          }
          continue;
        }
        if (done) break;
        await sleep(this.pollMs);
      }
      await syncing;
      await fh.datasync();
      return hash.digest();
    } finally {
      await fh.close();
    }
  }

  /** Call after the writer exited. Resolves with every followed file's digest, by name. */
  async finish(): Promise<Map<string, FileDigest>> {
    this.writerDone = true;
    await this.scanning;
    const out = new Map<string, FileDigest>();
    for (const [n, p] of this.followers) out.set(n, await p);
    return out;
  }

  /** Stops following without results (the dump failed). */
  async abort(): Promise<void> {
    this.writerDone = true;
    await this.scanning;
    await Promise.allSettled(this.followers.values());
  }
}
