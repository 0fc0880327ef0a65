import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { META_BLOB, storeMetaBlob } from '../../src/images/checkpoint-writer.js';
import { DirImageStore } from '../../src/images/dir-store.js';
import { unpackTar } from '../../src/images/tar-pack.js';
import { useTempDir } from '../helpers/temp-dir.js';

describe('the meta blob stored while the page capture finishes', () => {
  const tmp = useTempDir('hubshift-meta-');

  it('should pack every image but the page data, and the side files, while pipes and capture files sit beside them', async () => {
    const dir = tmp();
    const images = join(dir, 'images');
    await mkdir(images);
    await writeFile(join(images, 'inventory.img'), 'inv');
    await writeFile(join(images, 'pagemap-1.img'), 'map');
    // What a capture leaves while it flushes: criu's pipe under the image's name, the data beside it.
    execFileSync('mkfifo', [join(images, 'pages-1.img')]);
    await writeFile(join(images, 'pages-1.img.data'), 'memory');
    // An image criu wrote itself, past the pipes.
    await writeFile(join(images, 'pages-7.img'), 'more memory');
    await writeFile(join(dir, 'server.log'), 'log');
    const store = new DirImageStore(join(dir, 'store'));
    const blob = await storeMetaBlob({ store, id: 'c1a2b3c4d5e6f', imagesDir: images, sideFiles: [{ name: 'server.log', path: join(dir, 'server.log') }], compression: 'none' });
    expect(blob.name).toBe(META_BLOB);
    const names = await unpackTar(await store.openBlob('c1a2b3c4d5e6f', META_BLOB), join(dir, 'out'));
    expect(names.sort()).toEqual(['files/server.log', 'inventory.img', 'pagemap-1.img']);
    expect(await readFile(join(dir, 'out', 'pagemap-1.img'), 'utf8')).toBe('map');
  });
});
