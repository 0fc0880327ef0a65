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

  it('should refuse an entry that would leave the destination', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-tar-'));
    const pack = tar.pack();
    pack.entry({ name: '../escape', size: 1 }, 'x');
    pack.finalize();
    await expect(unpackTar(Readable.from(pack), join(dir, 'out'))).rejects.toThrow(/not a plain relative file: \.\.\/escape/);
    await expect(stat(join(dir, 'escape'))).rejects.toThrow();
  });
});
