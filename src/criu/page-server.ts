import { mkdir } from 'node:fs/promises';
import { CriuError } from '../core/errors.js';
import type { CriuBinary } from './binary.js';
import { spawnListeningCriu } from './driver.js';
import type { PageServerAt } from '../core/checkpoint.js';
import { diagnoseCriuLogFile } from './log.js';

/** A `criu page-server` receiving one dump's memory into an image directory. */
export interface PageServer {
  pid: number;
  /** 0 once the dump has sent every page and closed; other codes: the transfer broke. */
  exited: Promise<number>;
  kill(): void;
}

/**
 * Starts `criu page-server` on `at` and waits until it listens (criu writes
 * to its status fd then). It takes one connection: the pages of one `criu
 * dump --page-server`, written as pagemap and pages images into `imagesDir`,
 * and exits when the dump closes it.
 */
export async function startPageServer(bin: CriuBinary, opts: { imagesDir: string; logFile: string; at: PageServerAt; timeoutMs?: number }): Promise<PageServer> {
  await mkdir(opts.imagesDir, { recursive: true, mode: 0o700 });
  const c = await spawnListeningCriu(bin, ['page-server', '-D', opts.imagesDir, '--address', opts.at.address, '--port', String(opts.at.port), '-o', opts.logFile, '-v2']);
  if ((await c.listening(opts.timeoutMs ?? 10_000)) !== 'listening') {
    c.kill();
    await c.exited;
    const d = await diagnoseCriuLogFile(opts.logFile);
    throw new CriuError('criu_failed', `criu page-server did not start listening on ${opts.at.address}:${opts.at.port}: ${d.explanation} (log: ${opts.logFile})`, d.explanation, opts.logFile);
  }
  return { pid: c.pid, exited: c.exited, kill: c.kill };
}
