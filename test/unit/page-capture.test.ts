import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashFile } from '../../src/images/hashing.js';
import { PageCapture, PageCaptureHelpers } from '../../src/images/page-capture.js';
import { run, waitFor } from '../../src/util/exec.js';
import { isAlive } from '../../src/util/proc.js';
import { useTempDir } from '../helpers/temp-dir.js';

const PIECE = 1 << 20;

/** What criu does to a page image: opens it for writing (a pipe, here) and writes it front to back; `empty` ones it opens and closes. */
async function writeLikeCriu(images: string, source: string, into: string, empty: string[]): Promise<void> {
  const touches = empty.map((n) => `: > '${join(images, n)}'`).join('; ');
  await run('sh', ['-c', `cat '${source}' > '${join(images, into)}'${touches ? `; ${touches}` : ''}`], { timeoutMs: 30_000 });
}

/** The agent's hook at post-dump: says criu is done, waits for the capture's status. */
async function postDump(control: string): Promise<string> {
  await writeFile(join(control, 'criu-done'), '');
  return waitFor('the capture status', () => readFile(join(control, 'status'), 'utf8').catch(() => undefined), { timeoutMs: 20_000, intervalMs: 10 });
}

describe('page capture: criu page images caught on their way to disk', () => {
  const tmp = useTempDir('hubshift-capture-');

  async function setUp(name: string): Promise<{ images: string; control: string; source: string; data: Buffer }> {
    const images = join(tmp(), name, 'images');
    const control = join(tmp(), name, 'capture');
    await mkdir(images, { recursive: true });
    await mkdir(control, { recursive: true });
    // Whole pages and a part piece, as criu writes them.
    const data = randomBytes(5 * PIECE + 3 * 4096);
    const source = join(tmp(), name, 'source');
    await writeFile(source, data);
    return { images, control, source, data };
  }

  it('should write each image as written, hashed in pieces, and leave only the images a pagemap names', async () => {
    const { images, control, source, data } = await setUp('ok');
    let reported = 0;
    const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img', 'pages-2.img', 'pages-3.img'], pieceBytes: PIECE, onBytes: (n) => (reported += n) });
    for (const n of ['pages-1.img', 'pages-2.img', 'pages-3.img']) expect((await lstat(join(images, n))).isFIFO()).toBe(true);
    await writeLikeCriu(images, source, 'pages-1.img', ['pages-2.img']);
    expect(await postDump(control)).toBe('ok\n');
    // pages-2 was opened but left empty, and a pagemap names it; nothing named pages-3.
    const digests = await capture.finish(new Set(['pages-1.img', 'pages-2.img']));
    expect((await readdir(images)).sort()).toEqual(['pages-1.img', 'pages-2.img']);
    expect((await lstat(join(images, 'pages-1.img'))).isFile()).toBe(true);
    expect(Buffer.compare(await readFile(join(images, 'pages-1.img')), data)).toBe(0);
    expect(digests.get('pages-1.img')).toEqual(await hashFile(join(images, 'pages-1.img'), undefined, PIECE));
    expect(digests.get('pages-2.img')).toEqual(await hashFile(join(images, 'pages-2.img'), undefined, PIECE));
    expect(reported).toBe(data.length);
  });

  it('should flush the disk as it writes, and still write and hash every image whole', async () => {
    for (const syncEveryBytes of [0, 2 * PIECE]) {
      const { images, control, source, data } = await setUp(`flushing-${syncEveryBytes}`);
      const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img', 'pages-2.img'], pieceBytes: PIECE, syncEveryBytes });
      // Two images at once, as criu writes the server's and a kernel's: each has flushes of its own in flight.
      await Promise.all([writeLikeCriu(images, source, 'pages-1.img', []), writeLikeCriu(images, source, 'pages-2.img', [])]);
      expect(await postDump(control)).toBe('ok\n');
      const digests = await capture.finish(new Set(['pages-1.img', 'pages-2.img']));
      for (const n of ['pages-1.img', 'pages-2.img']) {
        expect(Buffer.compare(await readFile(join(images, n)), data)).toBe(0);
        expect(digests.get(n)).toEqual(await hashFile(join(images, n), undefined, PIECE));
      }
    }
  });

  it('should finish when the agent says criu is done, as after a dump that leaves the tasks stopped and runs no hook', async () => {
    const { images, control, source, data } = await setUp('stopped');
    const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img', 'pages-2.img'], pieceBytes: PIECE });
    await writeLikeCriu(images, source, 'pages-1.img', []);
    // pages-2.img never opened: only the word that criu is done wakes its reader.
    await capture.criuDone();
    const digests = await capture.finish(new Set(['pages-1.img']));
    expect(await readFile(join(control, 'status'), 'utf8')).toBe('ok\n');
    expect((await readdir(images)).sort()).toEqual(['pages-1.img']);
    expect(Buffer.compare(await readFile(join(images, 'pages-1.img')), data)).toBe(0);
    expect(digests.get('pages-1.img')).toEqual(await hashFile(join(images, 'pages-1.img'), undefined, PIECE));
  });

  it('should use a helper started ahead of need, start the next once it has finished, and replace one that died', async () => {
    const helpers = new PageCaptureHelpers(PIECE);
    try {
      helpers.warm();
      const warm = helpers.waitingPid as number;
      expect(await isAlive(warm)).toBe(true);
      const { images, control, source, data } = await setUp('warm');
      const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img'], pieceBytes: PIECE }, helpers);
      expect(capture.pid).toBe(warm);
      expect(helpers.waitingPid).toBeUndefined();
      await writeLikeCriu(images, source, 'pages-1.img', []);
      expect(await postDump(control)).toBe('ok\n');
      const digests = await capture.finish(new Set(['pages-1.img']));
      expect(Buffer.compare(await readFile(join(images, 'pages-1.img')), data)).toBe(0);
      expect(digests.get('pages-1.img')).toEqual(await hashFile(join(images, 'pages-1.img'), undefined, PIECE));
      const next = await waitFor('the next helper', async () => helpers.waitingPid, { timeoutMs: 5_000, intervalMs: 20 });
      expect(next).not.toBe(warm);
      // A waiting helper that was killed is not handed a dump: a new one is started for it.
      process.kill(next, 'SIGKILL');
      await waitFor('the killed helper to be gone', async () => ((await isAlive(next)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
      const again = await setUp('after-death');
      const replaced = await PageCapture.start({ imagesDir: again.images, controlDir: again.control, names: ['pages-1.img'], pieceBytes: PIECE }, helpers);
      expect(replaced.pid).not.toBe(next);
      await replaced.abort();
    } finally {
      const waiting = helpers.waitingPid;
      helpers.close();
      if (waiting) await waitFor('the waiting helper to end', async () => ((await isAlive(waiting)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    }
  });

  it('should keep every piece whole when many small pieces finish at once (each buffer goes back once)', async () => {
    // Small pieces make a write and a hash of one piece end at the same moment often: a buffer put back by
    // both would be read into twice at once, and the image would hold another piece's bytes.
    const small = 64 << 10;
    for (let round = 0; round < 3; round++) {
      const images = join(tmp(), `many${round}`, 'images');
      const control = join(tmp(), `many${round}`, 'capture');
      await mkdir(images, { recursive: true });
      await mkdir(control, { recursive: true });
      const data = randomBytes(32 << 20);
      const source = join(tmp(), `many${round}`, 'source');
      await writeFile(source, data);
      const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img'], pieceBytes: small });
      await writeLikeCriu(images, source, 'pages-1.img', []);
      expect(await postDump(control)).toBe('ok\n');
      const digests = await capture.finish(new Set(['pages-1.img']));
      expect(Buffer.compare(await readFile(join(images, 'pages-1.img')), data)).toBe(0);
      expect(digests.get('pages-1.img')).toEqual(await hashFile(join(images, 'pages-1.img'), undefined, small));
    }
  });

  it('should read its pipe to the end and report the failure when the image cannot be written', async () => {
    const { images, control, source } = await setUp('broken');
    const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img', 'pages-2.img'], pieceBytes: PIECE });
    // The capture's file for pages-1 cannot be made: the writer must still finish (criu never blocks).
    await mkdir(join(images, 'pages-1.img.data'));
    await writeLikeCriu(images, source, 'pages-1.img', []);
    expect(await postDump(control)).toMatch(/^error pages-1\.img: .*Is a directory/);
    expect(await capture.failure()).toMatch(/^pages-1\.img: .*Is a directory/);
    await expect(capture.finish(new Set(['pages-1.img']))).rejects.toThrow(/capturing the page images failed/);
  });

  it('should end its helper when the dump is abandoned before post-dump', async () => {
    const { images, control } = await setUp('abandoned');
    const capture = await PageCapture.start({ imagesDir: images, controlDir: control, names: ['pages-1.img'], pieceBytes: PIECE });
    const pid = capture.pid;
    expect(await isAlive(pid)).toBe(true);
    await capture.abort();
    expect(await isAlive(pid)).toBe(false);
    // A hook still waiting would be told.
    expect(await readFile(join(control, 'status'), 'utf8')).toMatch(/^error the page capture helper was killed by SIGKILL/);
  });

  it('should fail the dump and end itself when the agent that started it dies', async () => {
    const { images, control } = await setUp('orphaned');
    // An agent that starts a capture and dies at once, without ending it.
    const agent = `
      import { PageCapture } from ${JSON.stringify(join(process.cwd(), 'src/images/page-capture.ts'))};
      const c = await PageCapture.start({ imagesDir: ${JSON.stringify(images)}, controlDir: ${JSON.stringify(control)}, names: ['pages-1.img'] });
      console.log(c.pid);
      process.exit(0);
    `;
    const { stdout } = await run(join(process.cwd(), 'node_modules/.bin/tsx'), ['--input-type=module', '-e', agent], { timeoutMs: 30_000 });
    const pid = Number(stdout.trim());
    expect(pid).toBeGreaterThan(0);
    try {
      // The hook waiting at post-dump is told, so criu fails the dump and resumes the session.
      expect(await postDump(control)).toMatch(/^error the agent that started the page capture has gone/);
      await waitFor('the orphaned helper to end', async () => ((await isAlive(pid)) ? undefined : true), { timeoutMs: 5_000 });
    } finally {
      if (await isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
