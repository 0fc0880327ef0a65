import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { CriuError } from '../core/errors.js';
import { killQuietly } from '../util/proc.js';
import { criuCommand, type CriuBinary } from './binary.js';
import type { PageServerAddress } from './driver.js';
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
export async function startPageServer(bin: CriuBinary, opts: { imagesDir: string; logFile: string; at: PageServerAddress; timeoutMs?: number }): Promise<PageServer> {
  await mkdir(opts.imagesDir, { recursive: true, mode: 0o700 });
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const { cmd, args } = criuCommand(bin, ['page-server', '-D', opts.imagesDir, '--address', opts.at.address, '--port', String(opts.at.port), '-o', opts.logFile, '-v2', '--status-fd', '3']);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number>((resolve) => {
    child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
    child.on('error', () => resolve(127));
  });
  const kill = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) killQuietly(child.pid);
  };
  const status = child.stdio[3] as Readable | null;
  const listening = await Promise.race([
    new Promise<boolean>((resolve) => status?.once('data', () => resolve(true))),
    exited.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref()),
  ]);
  status?.destroy();
  if (!listening) {
    kill();
    await exited;
    const d = await diagnoseCriuLogFile(opts.logFile);
    throw new CriuError('criu_failed', `criu page-server did not start listening on ${opts.at.address}:${opts.at.port}: ${d.explanation} (log: ${opts.logFile})`, d.explanation, opts.logFile);
  }
  return { pid: child.pid as number, exited, kill };
}
