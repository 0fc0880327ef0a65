import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { Sha256, pieceCount, type FileDigest } from '../core/checkpoint.js';

const SizeLine = z.tuple([z.literal('size'), z.coerce.number().int().nonnegative()]);
const PieceLine = z.tuple([z.coerce.number().int().nonnegative(), Sha256, z.coerce.number().int().nonnegative()]);

/**
 * What a piece-hashing process says on stdout ("size N", then "INDEX SHA256
 * BYTES" for each piece, in any order), read into the file's digest once it
 * exits 0 having named every piece: the Python helper's protocol
 * (helper-hashing.ts) and the native piece hasher's (native-hashing.ts).
 * `spawnFailed` turns a spawn error into the rejection.
 */
export function readPieceLines(
  child: ChildProcess,
  path: string,
  pieceBytes: number,
  lastWords: () => string,
  spawnFailed: (err: NodeJS.ErrnoException) => Error,
  onBytes?: (n: number) => void,
): Promise<FileDigest> {
  return new Promise<FileDigest>((resolve, reject) => {
    let size: number | undefined;
    let sha256: string[] = [];
    let got = 0;
    let pieces = 0;
    let bad: string | undefined;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const words = line.split(' ');
      if (size === undefined) {
        const s = SizeLine.safeParse(words);
        if (!s.success) return void (bad ??= `unexpected first line ${JSON.stringify(line)}`);
        size = s.data[1];
        sha256 = new Array<string>(pieceCount(size, pieceBytes));
        return;
      }
      const p = PieceLine.safeParse(words);
      if (!p.success || p.data[0] >= sha256.length) return void (bad ??= `unexpected line ${JSON.stringify(line)}`);
      const [i, hex, n] = p.data;
      if (sha256[i] === undefined) pieces++;
      sha256[i] = hex;
      got += n;
      onBytes?.(n);
    });
    child.once('error', (err: NodeJS.ErrnoException) => reject(spawnFailed(err)));
    child.once('close', (code, signal) => {
      if (code !== 0 || bad || size === undefined || pieces !== sha256.length) {
        const why = signal ? `killed by ${signal}` : bad ?? (lastWords() || `exit ${code}`);
        reject(new Error(`hashing ${path} failed: ${why}`));
        return;
      }
      resolve({ bytes: got, pieceBytes, sha256 });
    });
  });
}
