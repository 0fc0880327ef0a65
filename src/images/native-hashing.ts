import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { FileDigest } from '../core/checkpoint.js';
import { readPieceLines } from './piece-lines.js';

/**
 * The native piece hasher (infra/native/piece-hasher.c, built by `npm run
 * setup`): where the CPU has AVX-512, each thread hashes 16 pieces at once,
 * one in each lane of the vector registers. On this VM it verified a 1.1 GiB
 * image in 0.28-0.31 s warm and 0.42-0.44 s cold (page cache dropped),
 * against 0.50-0.58 s and 0.67-0.75 s for the Python helper
 * (helper-hashing.ts), alternated, 2026-12-03. `HUBSHIFT_PIECE_HASHER`
 * names another build.
 */
export const DEFAULT_PIECE_HASHER = '/opt/hubshift/bin/piece-hasher';

/** stderr kept to explain a failure: the hasher says why in one line. */
const STDERR_TAIL = 2000;

/** The native piece hasher is not installed here: the caller hashes another way. */
export class NativeHasherUnavailable extends Error {}

/** The piece hasher's path: HUBSHIFT_PIECE_HASHER, else setup's build. */
export function pieceHasherPath(): string {
  return process.env.HUBSHIFT_PIECE_HASHER || DEFAULT_PIECE_HASHER;
}

/** Whether the piece hasher is installed and executable. */
export function nativeHasherInstalled(): boolean {
  try {
    accessSync(pieceHasherPath(), constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface NativeHashOptions {
  /** false: every piece through OpenSSL, one at a time a thread, as on a CPU without AVX-512 (tests compare both). */
  lanes?: boolean;
  threads?: number;
}

/**
 * sha256 of each piece of the file at `path`, by the native piece hasher, on
 * a thread a core. Rejects with NativeHasherUnavailable when it is not
 * installed, and with an Error naming the file when hashing fails.
 */
export function hashFileNatively(path: string, pieceBytes: number, onBytes?: (n: number) => void, opts: NativeHashOptions = {}): Promise<FileDigest> {
  const bin = pieceHasherPath();
  const missing = (): NativeHasherUnavailable => new NativeHasherUnavailable(`the piece hasher ${bin} is not installed (run npm run setup)`);
  // A look (microseconds) where it is not built, instead of a spawn that fails (a few ms) for every large file.
  if (!nativeHasherInstalled()) return Promise.reject(missing());
  const args = [...(opts.lanes === false ? ['--no-lanes'] : []), String(pieceBytes), String(opts.threads ?? availableParallelism()), path];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-STDERR_TAIL)));
  const lastWords = (): string => stderr.trim().split('\n').pop() ?? '';
  const unavailable = (err: NodeJS.ErrnoException): Error =>
    err.code === 'ENOENT' || err.code === 'EACCES' ? missing() : err;
  return readPieceLines(child, path, pieceBytes, lastWords, unavailable, onBytes);
}
