import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lazyRestoreBlocker, transparentHugePages } from '../../src/criu/transparent-huge-pages.js';

describe("the host's transparent huge pages, for lazy restores", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-thp-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ['[always] madvise never\n', 'always', true],
    ['always [madvise] never\n', 'madvise', false],
    ['always madvise [never]\n', 'never', false],
  ])('should read %j as %s', async (text, mode, blocked) => {
    const file = join(dir, mode);
    await writeFile(file, text);
    expect(transparentHugePages(file)).toBe(mode);
    expect(lazyRestoreBlocker(file) !== null).toBe(blocked);
    if (blocked) expect(lazyRestoreBlocker(file)).toMatch(/set it to madvise \(echo madvise > .*\)/);
  });

  it('should not block lazy restores where the setting cannot be read (a kernel without transparent huge pages)', () => {
    expect(transparentHugePages(join(dir, 'absent'))).toBeNull();
    expect(lazyRestoreBlocker(join(dir, 'absent'))).toBeNull();
  });
});
