import { spawn, type ChildProcess } from 'node:child_process';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { HUGE_PAGE_MALLOC_TUNABLE, HugePageCollapses, collapseHugePages, withHugePageMalloc } from '../../src/agent/huge-page-collapse.js';
import { sessionEnv, sessionPaths } from '../../src/agent/sandbox.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { anonHugePagesKiB } from '../helpers/session-processes.js';

/**
 * A process holding `mib` MiB of private anonymous memory in 4 KiB pages (advised no huge pages while touched),
 * then advised into huge pages: what a lazy restore leaves of a session's huge-page mappings.
 */
async function holder(mib: number): Promise<ChildProcess> {
  const py = `
import mmap, sys, time
m = mmap.mmap(-1, ${mib} << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
for at in range(0, len(m), 4096):
    m[at] = 1
m.madvise(mmap.MADV_HUGEPAGE)
print('ready', flush=True)
time.sleep(120)
`;
  const child = spawn('/usr/bin/python3', ['-I', '-S', '-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  return child;
}

describe("a session's memory in transparent huge pages", () => {
  const started: ChildProcess[] = [];
  afterEach(() => {
    for (const c of started.splice(0)) if (c.pid) killQuietly(c.pid);
  });

  it("should give sessions glibc's huge-page malloc, beside the user's own tunables, and not override theirs", () => {
    expect(withHugePageMalloc(undefined)).toBe(HUGE_PAGE_MALLOC_TUNABLE);
    expect(withHugePageMalloc('glibc.malloc.arena_max=2')).toBe(`glibc.malloc.arena_max=2:${HUGE_PAGE_MALLOC_TUNABLE}`);
    expect(withHugePageMalloc('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0')).toBe('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0');
    const s = { id: 's1', user: 'ada', home: '/tmp/h', token: 't'.repeat(32), env: { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' } };
    expect(sessionEnv(s, sessionPaths('/tmp/h', s), { hugePages: true }).GLIBC_TUNABLES).toBe(`glibc.malloc.arena_max=2:${HUGE_PAGE_MALLOC_TUNABLE}`);
    expect(sessionEnv({ ...s, env: {} }, sessionPaths('/tmp/h', s), { hugePages: true }).GLIBC_TUNABLES).toBe(HUGE_PAGE_MALLOC_TUNABLE);
    expect(sessionEnv({ ...s, env: {} }, sessionPaths('/tmp/h', s), { hugePages: false }).GLIBC_TUNABLES).toBeUndefined();
  });

  it("should put the session's server on glibc's malloc (its kernels getting theirs back through its config), unless the user chose an allocator", () => {
    const s = { id: 's1', user: 'ada', home: '/tmp/h', token: 't'.repeat(32), env: {} };
    const paths = sessionPaths('/tmp/h', s);
    expect(sessionEnv(s, paths, { hugePages: true })).toMatchObject({ PYTHONMALLOC: 'malloc', HUBSHIFT_SERVER_PYTHONMALLOC: '1', JUPYTER_CONFIG_PATH: paths.jupyterConfig });
    expect(sessionEnv({ ...s, env: { JUPYTER_CONFIG_PATH: '/etc/mine' } }, paths, { hugePages: true }).JUPYTER_CONFIG_PATH).toBe(`${paths.jupyterConfig}:/etc/mine`);
    const own = sessionEnv({ ...s, env: { PYTHONMALLOC: 'pymalloc_debug' } }, paths, { hugePages: true });
    expect(own.PYTHONMALLOC).toBe('pymalloc_debug');
    expect(own.HUBSHIFT_SERVER_PYTHONMALLOC).toBeUndefined();
    expect(sessionEnv(s, paths, { hugePages: false }).PYTHONMALLOC).toBeUndefined();
  });

  it('should collapse the mappings a process advised into huge pages, and skip a process that is gone', async () => {
    const p = await holder(64);
    started.push(p);
    expect(await anonHugePagesKiB(p.pid as number)).toBe(0);
    const r = await collapseHugePages([p.pid as number, 2 ** 22 + 1]);
    expect(r.bytes).toBeGreaterThanOrEqual(62 << 20);
    expect(r.failed).toEqual({});
    expect(await anonHugePagesKiB(p.pid as number)).toBeGreaterThanOrEqual(62 * 1024);
  });

  it('should end a collapse under way when stopped (a dump of the session begins), leaving the rest in 4 KiB pages', async () => {
    const p = await holder(1024);
    started.push(p);
    const collapses = new HugePageCollapses(pino({ level: 'silent' }));
    collapses.start('s1', [p.pid as number]);
    expect(collapses.isCollapsing('s1')).toBe(true);
    await waitFor('the collapse to begin', async () => ((await anonHugePagesKiB(p.pid as number)) > 0 ? true : undefined), { timeoutMs: 10_000, intervalMs: 5 });
    const t0 = performance.now();
    await collapses.stop('s1');
    // Within one 64 MiB call of the helper.
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(collapses.isCollapsing('s1')).toBe(false);
    const atStop = await anonHugePagesKiB(p.pid as number);
    await sleep(300);
    expect(await anonHugePagesKiB(p.pid as number)).toBe(atStop);
    expect(atStop).toBeLessThan(1000 * 1024);
    expect(await isAlive(p.pid as number)).toBe(true);
  });
});
