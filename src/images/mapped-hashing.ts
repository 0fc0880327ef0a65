import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { Sha256, pieceCount, type FileDigest } from '../core/checkpoint.js';
import { PYTHON } from '../util/proc.js';

/**
 * Hashes a large file's pieces where they lie in the page cache: Python maps
 * the file and hashes slices of the mapping on several threads (hashlib lets
 * go of the GIL), so no byte is copied. Node cannot map a file; reading a
 * cold 1.1 GiB page image into buffers and handing them to WebCrypto (which
 * copies each) took 1.1-1.4 s and 1.7-2.2 s of CPU on this 2-core VM, the
 * mapping 0.73-0.81 s and 0.9 s of CPU, measured side by side. A restore
 * waits for this before criu runs (ARCHITECTURE invariant 3).
 *
 * The interpreter is the one the sessions' Jupyter servers already need.
 * Prints "size N", then "INDEX SHA256 BYTES" for each piece as it is done,
 * in any order; exits 1 with the reason on stderr (its last line is the
 * exception).
 */
const HASH_PIECES_PY = `
import hashlib, mmap, os, sys, threading
piece, threads, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
print('size', size, flush=True)
mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
view = memoryview(mm) if mm else memoryview(b'')
count = max(1, -(-size // piece))
lock = threading.Lock()
state = {'next': 0, 'error': None}
def work():
    try:
        while True:
            with lock:
                i = state['next']
                state['next'] += 1
            if i >= count or state['error']:
                return
            part = view[i * piece:min(size, (i + 1) * piece)]
            digest = hashlib.sha256(part).hexdigest()
            n = len(part)
            part.release()
            with lock:
                sys.stdout.write(f'{i} {digest} {n}\\n')
                sys.stdout.flush()
    except BaseException as e:
        state['error'] = repr(e)
workers = [threading.Thread(target=work) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
view.release()
if mm:
    mm.close()
if state['error']:
    sys.exit(state['error'])
`;

/** Threads hashing at once: four kept a cold read and both cores busy here (two left the disk idle between pieces). */
const THREADS = 4;

const SizeLine = z.tuple([z.literal('size'), z.coerce.number().int().nonnegative()]);
const PieceLine = z.tuple([z.coerce.number().int().nonnegative(), Sha256, z.coerce.number().int().nonnegative()]);

/** Why the helper could not be used at all (no interpreter): the caller hashes in-process instead. */
export class MappedHashingUnavailable extends Error {}

/**
 * sha256 of each piece of the file at `path`, hashed through a memory map by
 * a Python helper. Rejects with MappedHashingUnavailable when the helper
 * cannot start, and with an Error naming the file when hashing fails.
 */
export function hashFileMapped(path: string, pieceBytes: number, onBytes?: (n: number) => void): Promise<FileDigest> {
  return new Promise<FileDigest>((resolve, reject) => {
    const child = spawn(PYTHON, ['-I', '-S', '-c', HASH_PIECES_PY, String(pieceBytes), String(THREADS), path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let size: number | undefined;
    let sha256: string[] = [];
    let got = 0;
    let pieces = 0;
    let bad: string | undefined;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
    createInterface({ input: child.stdout }).on('line', (line) => {
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
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT' ? new MappedHashingUnavailable(`${PYTHON} is not installed`) : err);
    });
    child.once('close', (code, signal) => {
      if (code !== 0 || bad || size === undefined || pieces !== sha256.length) {
        // SIGBUS: the file was cut shorter while mapped.
        const why = signal ? `killed by ${signal}${signal === 'SIGBUS' ? ' (the file shrank while it was read)' : ''}` : bad ?? (stderr.trim().split('\n').pop() || `exit ${code}`);
        reject(new Error(`hashing ${path} failed: ${why}`));
        return;
      }
      resolve({ bytes: got, pieceBytes, sha256 });
    });
  });
}
