import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pruneLogs } from '../../src/agent/log-retention.js';
import { useTempDir } from '../helpers/temp-dir.js';

describe("criu's logs kept for a number of days", () => {
  const tmp = useTempDir('hubshift-logs-');
  const DAY = 86_400_000;

  it('should remove the files last written before the limit, and keep newer ones and directories', async () => {
    const now = Date.now();
    const at = async (name: string, daysAgo: number): Promise<void> => {
      await writeFile(join(tmp(), name), 'log\n');
      const t = new Date(now - daysAgo * DAY);
      await utimes(join(tmp(), name), t, t);
    };
    await at('c1-dump.log', 20);
    await at('c1-lazy-pages-1.log', 15);
    await at('c2-restore-2.log', 13);
    await at('c3-dump.log', 0);
    await mkdir(join(tmp(), 'old-dir'));
    const t = new Date(now - 30 * DAY);
    await utimes(join(tmp(), 'old-dir'), t, t);
    expect(await pruneLogs(tmp(), 14 * DAY, now)).toBe(2);
    expect((await readdir(tmp())).sort()).toEqual(['c2-restore-2.log', 'c3-dump.log', 'old-dir']);
    expect(await pruneLogs(tmp(), 14 * DAY, now)).toBe(0);
  });

  it('should remove nothing from a directory that is not there', async () => {
    expect(await pruneLogs(join(tmp(), 'none'), DAY)).toBe(0);
  });
});
