import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { Sha256, pieceCount, type FileDigest } from '../core/checkpoint.js';
import { PYTHON } from '../util/proc.js';
import { PythonHelper, WaitingHelpers, interpreterMissing } from '../util/python-helper.js';
import { PIECE_BYTES } from './hashing.js';

/**
 * Catches criu's page images on their way to disk. criu opens each pages-N.img
 * with O_CREAT and splices the memory into it; where a named pipe already
 * sits at that name, criu splices into the pipe instead (it does the same in
 * its --stream mode), and this helper reads it into a few reused, page-aligned
 * buffers, hashes each piece and writes it with O_DIRECT to pages-N.img.data,
 * flushing the disk's cache as it goes (SYNC_EVERY_BYTES).
 * The page cache is never touched: on this VM, whose balloon takes back freed
 * memory, criu's own writes into fresh page cache ran at 0.5 GB/s where the
 * disk takes 1.6 GB/s (dd oflag=direct), and on any host a checkpoint no
 * longer pushes the node's other sessions' files out of the page cache.
 *
 * The helper is started ahead of need (PageCaptureHelpers): it loads, maps and
 * touches its buffers and waits for its job on stdin, {"control", "paths"};
 * starting Python took 0.045 s of each checkpoint, and faulting the buffers
 * in during the dump slowed its first 64 MiB (the server's memory) to
 * 0.4-0.5 GB/s. So a waiting helper holds 66 MiB. Its buffers are private
 * anonymous memory in transparent huge pages where the kernel gives them:
 * O_DIRECT then sends the disk 4 MiB requests instead of 0.5-1 MiB ones (one
 * segment a page), which on this VM wrote 2.3-2.4 GB/s instead of 1.55-1.85.
 *
 * Given its job, the helper creates the pipes, prints "ready", then "piece NAME BYTES" as
 * each piece is written and "file NAME BYTES SHA256,..." when a pipe's
 * writer has closed and its data is flushed. criu's action script (the
 * agent's hook) makes CONTROL/criu-done at post-dump, when criu has closed
 * every page image but the session is still frozen (a dump that leaves the
 * tasks stopped runs no hook: the agent makes it, criuDone, once criu has
 * exited): the helper then wakes
 * the pipes criu never opened, and writes CONTROL/status ("ok", or "error
 * WHY"), which the hook waits for: the dump fails, and criu resumes the
 * session, unless every page is on disk. On a write error the helper keeps
 * reading its pipe to the end, so criu is never left blocked.
 */
/**
 * Python: `huge_page_buffers(count, size)`, `count` buffers of `size` bytes in
 * one private anonymous mapping, aligned to and advised into transparent huge
 * pages where the kernel gives them, every page touched. The capture writes
 * from them, and so does the bench's O_DIRECT baseline.
 */
export const HUGE_PAGE_BUFFERS_PY = `
def huge_page_buffers(count, size):
    huge = 2 << 20
    region = mmap.mmap(-1, count * size + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
        import ctypes
        start = -ctypes.addressof(ctypes.c_char.from_buffer(region)) % huge
    except (AttributeError, ImportError, OSError):
        start = 0
    for at in range(0, len(region), 4096):
        region[at] = 0
    return [memoryview(region)[start + i * size:start + (i + 1) * size] for i in range(count)]
`;

/**
 * The helper flushes the disk's cache (fdatasync) each time this many more
 * bytes of a file have gone to it, one flush at a time on a thread of its
 * own, beside the writes. O_DIRECT writes can wait in a write cache until a
 * flush (this VM's host holds them in its own page cache): with one flush at
 * the end, the last piece was read 0.45-0.53 s before a 1 GiB file was
 * durable; flushing every 64 MiB, 1 GiB checkpoints took 1.04-1.09 s
 * against 1.21-1.49 s (32 MiB 1.00-1.26, 128 MiB 1.06-1.39, 256 MiB
 * 1.07-1.26; 2026-12-02, alternated). The last flush, which the checkpoint
 * waits for, takes what was written since the one before it: 20-35 ms of
 * a 256 MiB kernel's checkpoint at 64 MiB. At 16 MiB those checkpoints
 * took 0.305-0.315 s at best and 0.33 s in the median, against 0.319-0.329
 * and 0.34-0.35 s (2026-12-03, three interleaved rounds of six); 1 GiB ones
 * 0.75-0.85 s either way. On a disk without such a cache (EBS) a flush
 * costs next to nothing.
 */
const SYNC_EVERY_BYTES = 16 << 20;

const CAPTURE_PY = `
import concurrent.futures, errno, fcntl, hashlib, json, mmap, os, queue, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
piece, parent = int(sys.argv[1]), os.getppid()
F_SETPIPE_SZ = 1031
try:
    with open('/proc/sys/fs/pipe-max-size') as f:
        pipe_max = int(f.read())
except (OSError, ValueError):
    pipe_max = 1 << 20
lock = threading.Lock()
def say(*words):
    with lock:
        sys.stdout.write(' '.join(str(w) for w in words) + '\\n')
        sys.stdout.flush()
${HUGE_PAGE_BUFFERS_PY}
buffers = queue.Queue()
for b in huge_page_buffers(4, piece):
    buffers.put(b)
pool = ThreadPoolExecutor(max_workers=3)
# One flush at a time, beside the writes (see SYNC_EVERY_BYTES).
syncer = ThreadPoolExecutor(max_workers=1)
errors = []
def fill(fd, view):
    n = 0
    while n < len(view):
        got = os.readv(fd, [view[n:]])
        if got == 0:
            break
        n += got
    return n
def drain(fd):
    sink = bytearray(1 << 20)
    while os.readv(fd, [sink]) > 0:
        pass
def write(out, plain, buf, n, at):
    view = buf[:n]
    try:
        whole = n - n % 4096
        if whole:
            os.pwrite(out, view[:whole], at)
        if whole < n:
            os.pwrite(plain, view[whole:], at + whole)
    finally:
        view.release()
def digest(buf, n):
    view = buf[:n]
    try:
        return hashlib.sha256(view).hexdigest()
    finally:
        view.release()
def capture(path):
    name = os.path.basename(path)
    fd = os.open(path, os.O_RDONLY)
    out = plain = -1
    syncing = None
    try:
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, pipe_max)
        except OSError:
            pass
        data = path + '.data'
        try:
            out = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            out = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        plain = os.open(data, os.O_WRONLY)
        jobs, at, synced = [], 0, 0
        while True:
            buf = buffers.get()
            n = fill(fd, buf)
            if n == 0:
                buffers.put(buf)
                break
            # The buffer goes back once, after both its write and its hash: two callbacks that each saw
            # both done would put it back twice, and two pieces would then be read into it at once.
            left = [2]
            def back(_f, buf=buf, left=left):
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    buffers.put(buf)
            w = pool.submit(write, out, plain, buf, n, at)
            h = pool.submit(digest, buf, n)
            w.add_done_callback(back)
            h.add_done_callback(back)
            jobs.append((w, h))
            at += n
            if at - synced >= sync_every and (syncing is None or syncing.done()):
                if syncing is not None:
                    syncing.result()
                syncing, synced = syncer.submit(os.fdatasync, out), at
            say('piece', name, n)
            if n < piece:
                break
        sums = []
        for w, h in jobs:
            w.result()
            sums.append(h.result())
        if syncing is not None:
            syncing.result()
        # An empty file has no data to flush: a journal commit (26-35 ms here) beside the last pages' flush. The
        # store makes it durable with the rest (its fsync after linking it), where it keeps it at all.
        if at:
            os.fdatasync(out)
        say('file', name, at, ','.join(sums) or '-')
    except BaseException as e:
        with lock:
            errors.append(f'{name}: {e}')
        drain(fd)
    finally:
        # A flush still queued must not run on a closed (or reused) descriptor.
        if syncing is not None:
            concurrent.futures.wait([syncing])
        for f in (out, plain):
            if f >= 0:
                os.close(f)
        os.close(fd)
job = sys.stdin.readline()
if not job:
    sys.exit(0)  # the agent went away before it had a dump to catch
job = json.loads(job)
control, paths, sync_every = job['control'], job['paths'], job['syncEvery']
for p in paths:
    os.mkfifo(p, 0o600)
# Once the pipes are there, criu may start: its open of one for writing waits for a reader, and the readers start
# meanwhile (2-7 ms here, 25 ms or more before criu opens its first page image).
say('ready')
readers = [threading.Thread(target=capture, args=(p,)) for p in paths]
for r in readers:
    r.start()
def report(status):
    with open(os.path.join(control, 'status.new'), 'w') as f:
        f.write(status.replace('\\n', ' ') + '\\n')
    os.rename(os.path.join(control, 'status.new'), os.path.join(control, 'status'))
trigger = os.path.join(control, 'criu-done')
def orphaned():
    # The agent is gone and nobody will store the images: fail the dump, so criu resumes the session.
    if os.getppid() != parent:
        report('error the agent that started the page capture has gone')
        os._exit(1)
while not os.path.exists(trigger):
    orphaned()
    # The agent (a stopped dump) or criu (a leave-running one) waits on what follows: a short wait here.
    time.sleep(0.001)
for p in paths:
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass
for r in readers:
    r.join()
orphaned()
report('ok' if not errors else 'error ' + '; '.join(errors))
say('done')
`;


const PieceLine = z.tuple([z.literal('piece'), z.string(), z.coerce.number().int().nonnegative()]);
const FileLine = z.tuple([z.literal('file'), z.string(), z.coerce.number().int().nonnegative(), z.string()]);
const Sums = z.union([z.literal('-').transform(() => [] as string[]), z.string().transform((s) => s.split(',')).pipe(z.array(Sha256))]);

/** The capture cannot run here (no interpreter): the caller lets criu write its page images itself. */
export class PageCaptureUnavailable extends Error {}

export interface PageCaptureOptions {
  imagesDir: string;
  /** An empty directory for the hook and the helper to meet in. */
  controlDir: string;
  /** Page images to catch: criu numbers them pages-1.img, pages-2.img, ... in the order it dumps. */
  names: readonly string[];
  pieceBytes?: number;
  /** Flush the disk's cache each time this many more bytes of a file are written (0: after every piece); default SYNC_EVERY_BYTES. */
  syncEveryBytes?: number;
  /** Called with each piece's bytes once written (progress). */
  onBytes?: (n: number) => void;
}

/**
 * Keeps one capture helper started ahead of need, so that a checkpoint does
 * not wait for Python to start (0.045 s). The next one starts a moment
 * after the one taken has finished, not during the dump it serves.
 */
export class PageCaptureHelpers extends WaitingHelpers {
  constructor(readonly pieceBytes: number = PIECE_BYTES) {
    super(() => startHelper(pieceBytes), 1);
  }

  /** The waiting helper's pid, if one waits. */
  get waitingPid(): number | undefined {
    return this.waitingPids[0];
  }
}

const startHelper = (pieceBytes: number): PythonHelper => new PythonHelper(CAPTURE_PY, [String(pieceBytes)]);

/** A running capture of one dump's page images (see CAPTURE_PY). */
export class PageCapture {
  private readonly files = new Map<string, { bytes: number; sha256: string[] }>();
  private failed: string | undefined;
  private readonly exited: Promise<void>;
  /** Resolves at the helper's last line (its status is written then), before the interpreter has exited. */
  private readonly said: Promise<void>;
  private saidDone: () => void = () => undefined;

  private constructor(
    private readonly opts: PageCaptureOptions,
    private readonly pieceBytes: number,
    private readonly helper: PythonHelper,
    ready: () => void,
  ) {
    const { child } = helper;
    this.said = new Promise<void>((resolve) => (this.saidDone = resolve));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => this.onLine(line, ready));
    this.exited = new Promise<void>((resolve) => {
      child.once('close', (code, signal) => {
        const status = join(opts.controlDir, 'status');
        if (code === 0 && !this.failed) return resolve();
        const said = helper.lastWords;
        this.failed ??= `the page capture helper ${signal ? `was killed by ${signal}` : `exited ${code}`}${said ? `: ${said}` : ''}`;
        // The hook may be waiting for a status that the helper never wrote.
        void writeFile(`${status}.agent`, `error ${this.failed}\n`)
          .then(() => rename(`${status}.agent`, status))
          .catch(() => undefined)
          .finally(resolve);
      });
    });
  }

  /**
   * Gives a helper (`helpers`' waiting one, or a new one) its job: it makes
   * the pipes; resolves once criu may start.
   */
  static start(opts: PageCaptureOptions, helpers?: PageCaptureHelpers): Promise<PageCapture> {
    const pieceBytes = opts.pieceBytes ?? PIECE_BYTES;
    return new Promise<PageCapture>((resolve, reject) => {
      const helper = helpers?.pieceBytes === pieceBytes ? helpers.take() : startHelper(pieceBytes);
      const unavailable = (err: NodeJS.ErrnoException): Error => (interpreterMissing(err) ? new PageCaptureUnavailable(`${PYTHON} is not installed`) : err);
      if (helper.error) return reject(unavailable(helper.error));
      const { child } = helper;
      const capture = new PageCapture(opts, pieceBytes, helper, () => resolve(capture));
      child.once('error', (err: NodeJS.ErrnoException) => reject(unavailable(err)));
      void capture.exited.then(() => reject(new Error(capture.failed ?? 'the page capture helper ended before it was ready')));
      child.stdin?.end(`${JSON.stringify({ control: opts.controlDir, paths: opts.names.map((n) => join(opts.imagesDir, n)), syncEvery: opts.syncEveryBytes ?? SYNC_EVERY_BYTES })}\n`);
    });
  }

  private onLine(line: string, ready: () => void): void {
    const words = line.split(' ');
    if (line === 'ready') return ready();
    if (line === 'done') return this.saidDone();
    const piece = PieceLine.safeParse(words);
    if (piece.success) return this.opts.onBytes?.(piece.data[2]);
    const file = FileLine.safeParse(words);
    const sums = file.success ? Sums.safeParse(file.data[3]) : undefined;
    if (file.success && sums?.success && sums.data.length === (file.data[2] === 0 ? 0 : pieceCount(file.data[2], this.pieceBytes))) {
      this.files.set(file.data[1], { bytes: file.data[2], sha256: sums.data });
      return;
    }
    this.failed ??= `the page capture helper said ${JSON.stringify(line.slice(0, 200))}`;
  }

  /** The helper's pid. */
  get pid(): number {
    return this.helper.child.pid as number;
  }

  /** Where criu's action script meets the helper at post-dump (criu-hook.ts waits there for its status). */
  get controlDir(): string {
    return this.opts.controlDir;
  }

  /** Why capturing failed, once it has (read after criu's dump failed). */
  async failure(): Promise<string | undefined> {
    if (this.failed) return this.failed;
    const status = await readFile(join(this.opts.controlDir, 'status'), 'utf8').catch(() => 'ok');
    return status.startsWith('error ') ? status.slice('error '.length).trim() : undefined;
  }

  /**
   * After criu's dump succeeded (so the hook saw every page on disk): each
   * page image criu wrote, or that a pagemap names (`inUse`: an empty one
   * looks like a pipe criu never opened), takes its pipe's place; the other
   * pipes are removed. Returns their digests by name; images criu wrote
   * itself, past the pipes made, are not among them.
   */
  async finish(inUse: ReadonlySet<string>): Promise<Map<string, FileDigest>> {
    // Its last line, or its exit (a helper that failed says nothing more).
    await Promise.race([this.said, this.exited]);
    const failed = await this.failure();
    if (failed) throw new Error(`capturing the page images failed: ${failed}`);
    const out = new Map<string, FileDigest>();
    for (const name of this.opts.names) {
      const path = join(this.opts.imagesDir, name);
      const got = this.files.get(name);
      if (!inUse.has(name) && !(got && got.bytes > 0)) {
        await rm(path, { force: true });
        await rm(`${path}.data`, { force: true });
        continue;
      }
      if (!got) throw new Error(`capturing the page images failed: criu wrote ${name} but the helper has no record of it`);
      await rename(`${path}.data`, path);
      // An empty image is one piece of nothing, as hashFile would say.
      out.set(name, { bytes: got.bytes, pieceBytes: this.pieceBytes, sha256: got.bytes === 0 ? [emptySha256] : got.sha256 });
    }
    return out;
  }

  /** Tells the helper that criu has closed every page image (what the hook does at post-dump): for a dump whose criu has exited. */
  async criuDone(): Promise<void> {
    await writeFile(join(this.opts.controlDir, 'criu-done'), '');
  }

  /** The dump failed or never ran: ends the helper (the caller removes the directories). */
  async abort(): Promise<void> {
    this.helper.child.kill('SIGKILL');
    await this.exited;
  }
}

const emptySha256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
