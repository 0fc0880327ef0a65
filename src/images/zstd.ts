import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { StoreError } from '../core/errors.js';

/**
 * zstd as a stream stage, through the zstd command (Node 20's zlib has no
 * zstd). Level 1 with all cores: on random memory compression buys little, so
 * it is off by default and kept fast when on.
 */
export function zstdStream(mode: 'compress' | 'decompress'): Duplex {
  const args = mode === 'compress' ? ['-q', '-1', '-T0', '-c'] : ['-q', '-d', '-c'];
  const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout });
  child.on('error', (err) => duplex.destroy(new StoreError(`zstd could not run: ${err.message} (run npm run setup)`)));
  child.on('close', (code) => {
    if (code !== 0) duplex.destroy(new StoreError(`zstd ${mode} failed (exit ${code}): ${stderr.trim()}`));
  });
  return duplex;
}
