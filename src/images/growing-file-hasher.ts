import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileDigest } from '../core/checkpoint.js';
import { sleep } from '../util/exec.js';
import { PieceHasher } from './hashing.js';
import { pageAlignedBuffer } from '../util/aligned-buffer.js';

export interface GrowingFileHasherOptions {
  /** Which files to follow. */
  match: RegExp;
  /** fdatasync after this many new bytes, so the disk writes while criu dumps. Default 16 MiB; 0 turns it off. */
  syncEveryBytes?: number;
  /** Flush the files at all (default true). A move's local copy only serves a rollback on this node, and is not flushed. */
  durable?: boolean;
  /**
   * Also hands each run of new bytes, in order, to this (a move sends them
   * while criu writes). It resolves when the chunk's buffer may be reused;
   * a few are in flight at once. It must not reject.
   */
  sink?: (name: string, chunk: Buffer) => Promise<void>;
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
        const p = this.follow(n);
        p.catch(() => undefined); // awaited in finish()
        this.followers.set(n, p);
      }
    }
  }

  private async follow(name: string): Promise<FileDigest> {
    const fh: FileHandle = await open(join(this.dir, name), 'r');
    const hash = new PieceHasher();
    const { sink } = this.opts;
    const durable = this.opts.durable ?? true;
    // With a sink, a ring of buffers: one is read into while the others are on their way.
    const ring = Array.from({ length: sink ? 4 : 1 }, () => ({ buf: pageAlignedBuffer(4 << 20), released: Promise.resolve() }));
    let turn = 0;
    let pos = 0;
    let unsynced = 0;
    let syncing: Promise<void> = Promise.resolve();
    try {
      for (;;) {
        const done = this.writerDone; // read before the read: EOF after done is the true end
        const slot = ring[turn % ring.length] as { buf: Buffer; released: Promise<void> };
        await slot.released;
        const { bytesRead } = await fh.read(slot.buf, 0, slot.buf.length, pos);
        if (bytesRead > 0) {
          const chunk = slot.buf.subarray(0, bytesRead);
          hash.update(chunk);
          pos += bytesRead;
          this.opts.onBytes?.(bytesRead);
          if (sink) {
            slot.released = sink(name, chunk);
            turn++;
          }
          unsynced += bytesRead;
          if (durable && this.syncEvery > 0 && unsynced >= this.syncEvery) {
            unsynced = 0;
            // One flush in flight at a time, overlapping the next reads.
            syncing = syncing.then(() => fh.datasync());
          }
          continue;
        }
        if (done) break;
        await sleep(this.pollMs);
      }
      await Promise.all(ring.map((r) => r.released));
      await syncing;
      if (durable) await fh.datasync();
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
