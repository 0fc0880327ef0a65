import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { keepLogs } from '../bench/keep-logs.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe("the migrate bench's --keep-logs", () => {
  it("should copy every host's agent and criu logs, and no image, token or home", async () => {
    const state = await mkdtemp(join(tmpdir(), 'hubshift-keep-logs-test-'));
    dirs.push(state);
    const host = join(state, 'hosts', 'host-1');
    await mkdir(join(host, 'logs'), { recursive: true });
    await mkdir(join(host, 'work', 'm1', 'images'), { recursive: true });
    await writeFile(join(host, 'agent.log'), '{"msg":"session moved (post-copy); its memory follows"}\n');
    await writeFile(join(host, 'agent.token'), 'secret');
    await writeFile(join(host, 'logs', 'in-s1-restore-1.log'), '(00.207034) Restore finished successfully.\n');
    await writeFile(join(host, 'work', 'm1', 'images', 'pages-1.img'), Buffer.alloc(4096));
    await writeFile(join(state, 'state.json'), '{}');
    const to = join(state, 'kept');
    await keepLogs(state, to);
    expect(await readFile(join(to, 'host-1', 'agent.log'), 'utf8')).toContain('session moved');
    expect(await readFile(join(to, 'host-1', 'logs', 'in-s1-restore-1.log'), 'utf8')).toContain('Restore finished');
    const files = (await readdir(to, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
    expect(files.sort()).toEqual(['agent.log', 'in-s1-restore-1.log']);
  });
});
