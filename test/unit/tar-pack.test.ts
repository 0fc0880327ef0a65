import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, describe, expect, it } from 'vitest';
import { packTar, unpackTar } from '../../src/images/tar-pack.js';

let dir = '';
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('image archive', () => {
  it('should carry file contents and modes', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-tar-'));
    await writeFile(join(dir, 'a.img'), 'alpha', { mode: 0o644 });
    await writeFile(join(dir, 'log'), 'line\n', { mode: 0o600 });
    await unpackTar(packTar([{ name: 'a.img', path: join(dir, 'a.img') }, { name: 'files/server.log', path: join(dir, 'log') }]), join(dir, 'out'));
    expect(await readFile(join(dir, 'out', 'a.img'), 'utf8')).toBe('alpha');
    expect((await stat(join(dir, 'out', 'a.img'))).mode & 0o777).toBe(0o644);
    expect((await stat(join(dir, 'out', 'files', 'server.log'))).mode & 0o777).toBe(0o600);
  });

  it('should carry small files (read whole) and large ones (streamed) side by side', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-tar-'));
    const big = randomBytes((3 << 20) + 4097);
    const small = randomBytes(5000);
    await writeFile(join(dir, 'big'), big, { mode: 0o640 });
    await writeFile(join(dir, 'small'), small);
    await writeFile(join(dir, 'empty'), '');
    const names = await unpackTar(
      packTar([
        { name: 'small.img', path: join(dir, 'small') },
        { name: 'files/server.log', path: join(dir, 'big') },
        { name: 'empty.img', path: join(dir, 'empty') },
      ]),
      join(dir, 'out'),
    );
    expect(names).toEqual(['small.img', 'files/server.log', 'empty.img']);
    expect(Buffer.compare(await readFile(join(dir, 'out', 'small.img')), small)).toBe(0);
    expect(Buffer.compare(await readFile(join(dir, 'out', 'files', 'server.log')), big)).toBe(0);
    expect((await stat(join(dir, 'out', 'files', 'server.log'))).mode & 0o777).toBe(0o640);
    expect((await stat(join(dir, 'out', 'empty.img'))).size).toBe(0);
  });

  it('should refuse an entry that would leave the destination', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-tar-'));
    const pack = tar.pack();
    pack.entry({ name: '../escape', size: 1 }, 'x');
    pack.finalize();
    await expect(unpackTar(Readable.from(pack), join(dir, 'out'))).rejects.toThrow(/not a plain relative file: \.\.\/escape/);
    await expect(stat(join(dir, 'escape'))).rejects.toThrow();
  });
});
