import type { FileDigest } from '../core/checkpoint.js';
import { PYTHON } from '../util/proc.js';
import { PythonHelper, WaitingHelpers, interpreterMissing } from '../util/python-helper.js';
import { readPieceLines } from './piece-lines.js';

/**
 * Hashes a large file's pieces in a Python helper, on several threads
 * (hashlib lets go of the GIL): each thread reads its piece 1 MiB at a time
 * into one buffer it keeps and hashes that while it is still in the CPU's
 * cache. Side by side on this 2-core VM, a cold 1.1 GiB file (page cache
 * dropped) took 0.57-0.82 s this way, 0.81-1.13 s read a 16 MiB piece at a time,
 * 0.93-1.14 s hashed through a memory map (the previous helper), warm
 * 0.40-0.44 s against 0.73-0.76 s mapped; in the agent, a 1 GiB restore's
 * verification 1.08-1.33 s against 1.51-1.84 s mapped, alternated
 * (2026-12-02). Node reading into buffers for WebCrypto, which copies each,
 * took 1.1-1.4 s and 1.7-2.2 s of CPU on 2026-11-30. A restore waits for
 * this before criu runs (ARCHITECTURE invariant 3).
 *
 * The interpreter is the one the sessions' Jupyter servers already need.
 * It reads its job from stdin, {"piece", "threads", "path"} (so that it can
 * be started ahead of need: HashingHelpers), and ends quietly if stdin closes
 * first. Prints "size N", then "INDEX SHA256 BYTES" for each piece as it is done,
 * in any order; exits 1 with the reason on stderr (its last line is the
 * exception).
 */
export const HASH_PIECES_PY = `
import hashlib, json, os, sys, threading
line = sys.stdin.buffer.readline()
if not line:
    sys.exit(0)
job = json.loads(line)
piece, threads, path = int(job['piece']), int(job['threads']), job['path']
chunk = 1 << 20
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
print('size', size, flush=True)
count = max(1, -(-size // piece))
lock = threading.Lock()
state = {'next': 0, 'error': None}
def work():
    view = memoryview(bytearray(chunk))
    try:
        while True:
            with lock:
                i = state['next']
                state['next'] += 1
            if i >= count or state['error']:
                return
            start = i * piece
            end = min(size, start + piece)
            h = hashlib.sha256()
            at = start
            while at < end:
                n = os.preadv(fd, [view[:min(chunk, end - at)]], at)
                if n <= 0:
                    raise EOFError(f'the file ended at byte {at} of {size}: it shrank while it was read')
                h.update(view[:n])
                at += n
            with lock:
                sys.stdout.write(f'{i} {h.hexdigest()} {end - start}\\n')
                sys.stdout.flush()
    except BaseException as e:
        state['error'] = f'{type(e).__name__}: {e}'
workers = [threading.Thread(target=work) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
if state['error']:
    sys.exit(state['error'])
`;

/** Threads hashing at once: four keep a cold read going and both cores busy here. */
const THREADS = 4;

const startHelper = (): PythonHelper => new PythonHelper(HASH_PIECES_PY);

/**
 * Hashing helpers started ahead of need; the agent keeps two waiting: a
 * restore verifies its server's and its kernel's page images at once, and
 * starting Python took 0.03-0.05 s of each here.
 */
export class HashingHelpers extends WaitingHelpers {
  constructor() {
    super(startHelper, 2);
  }
}

/** Why the helper could not be used at all (no interpreter): the caller hashes in-process instead. */
export class HashingHelperUnavailable extends Error {}

/**
 * sha256 of each piece of the file at `path`, hashed by a Python helper.
 * Rejects with HashingHelperUnavailable when the helper cannot start, and
 * with an Error naming the file when hashing fails.
 */
export function hashFileInHelper(path: string, pieceBytes: number, onBytes?: (n: number) => void, helpers?: HashingHelpers): Promise<FileDigest> {
  const helper = helpers ? helpers.take() : startHelper();
  const unavailable = (err: NodeJS.ErrnoException): Error => (interpreterMissing(err) ? new HashingHelperUnavailable(`${PYTHON} is not installed`) : err);
  if (helper.error) return Promise.reject(unavailable(helper.error));
  const digest = readPieceLines(helper.child, path, pieceBytes, () => helper.lastWords, unavailable, onBytes);
  helper.child.stdin?.end(`${JSON.stringify({ piece: pieceBytes, threads: THREADS, path })}\n`);
  return digest;
}
