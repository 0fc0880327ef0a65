import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { changedSinceCopy, copyAhead, frozenBy, precopyChoice, removeLeftCopies, snapshotPath } from '../../src/agent/memory-precopy.js';
import { processTree } from '../../src/util/proc.js';
import { useTempDir } from '../helpers/temp-dir.js';

/**
 * A session's process tree in a pid namespace of its own, as the agent runs
 * one: its first process (pid 1, the "server") holding 2 private pages of
 * 'S', and a child (a "kernel") holding 3 of 'a' and, apart, 64 of 'b',
 * and a file of 4 pages of 'f' mapped privately, every page read and the
 * second written ('w': copied on write, no longer the file's); a line on
 * its stdin makes the child write 'T' over the second page of 'a'. Prints
 * the four addresses; killed by the caller.
 */
async function sessionTree(): Promise<{ server: number; addresses: number[]; touch: () => Promise<void>; kill: () => void }> {
  // Each held between two PROT_NONE pages: a mapping of its own, never merged by the kernel with a neighbour (which
  // made the choice by mapping, and the runs, depend on where the interpreter's own memory happened to lie).
  const py = [
    'import mmap, ctypes, os, sys, tempfile, time',
    "libc = ctypes.CDLL(None, use_errno=True)",
    'libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]',
    'addr = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))',
    'def hold(n, c):',
    '    m = mmap.mmap(-1, (n + 2) * 4096, flags=mmap.MAP_PRIVATE)',
    '    for at in (0, (n + 1) * 4096): assert libc.mprotect(addr(m) + at, 4096, 0) == 0',
    '    m[4096:(n + 1) * 4096] = c * (n * 4096)',
    '    return m',
    'start = lambda m: addr(m) + 4096',
    "s = hold(2, b'S')",
    'r, w = os.pipe()',
    'if os.fork() == 0:',
    "    a, b = hold(3, b'a'), hold(64, b'b')",
    '    f = tempfile.TemporaryFile()',
    "    f.write(b'f' * 4 * 4096); f.flush()",
    '    fm = mmap.mmap(f.fileno(), 4 * 4096, flags=mmap.MAP_PRIVATE)',
    '    seen = sum(fm[i * 4096] for i in range(4))',
    "    fm[4096:8192] = b'w' * 4096",
    "    os.write(w, f'{start(a)} {start(b)} {addr(fm)}'.encode())",
    '    sys.stdin.readline()',
    "    a[8192:12288] = b'T' * 4096",
    "    os.write(w, b'done')",
    '    time.sleep(60)',
    'os.close(0)',
    "print(start(s), os.read(r, 100).decode(), flush=True)",
    "print(os.read(r, 100).decode(), flush=True)",
    'time.sleep(60)',
  ].join('\n');
  const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '/usr/bin/python3', '-c', py], { stdio: ['pipe', 'pipe', 'ignore'] });
  const kill = (): void => void child.kill('SIGKILL');
  try {
    // A line may come in more than one chunk (seen: the first address alone).
    let line = '';
    while (!line.includes('\n')) line += ((await once(child.stdout!, 'data')) as [Buffer])[0].toString();
    const [server] = (await processTree(child.pid!)).slice(1);
    const touch = async (): Promise<void> => {
      child.stdin!.write('\n');
      await once(child.stdout!, 'data');
    };
    return { server: server!, addresses: line.trim().split(/\s+/).map(Number), touch, kill };
  } catch (err) {
    kill();
    throw err;
  }
}

describe("a post-copy move's memory copied ahead", () => {
  const tmp = useTempDir('hubshift-ahead-');

  it("should choose the server's anonymous memory and, of the kernels', the mappings with the least of it up to the budget", async () => {
    const t = await sessionTree();
    try {
      const [s, a, b, f] = t.addresses as [number, number, number, number];
      const holds = (runs: { vaddr: number; bytes: number }[] | undefined, at: number, bytes: number): boolean => (runs ?? []).some((r) => r.vaddr <= at && at + bytes <= r.vaddr + r.bytes);
      const touches = (runs: { vaddr: number; bytes: number }[] | undefined, at: number, bytes: number): boolean => (runs ?? []).some((r) => r.vaddr < at + bytes && at < r.vaddr + r.bytes);
      // No budget: the server's memory, by its pid in the namespace, and of the kernel's only the page it wrote of its
      // file mapping (criu dumps that one into the images; the file's own pages it never dumps).
      const none = await precopyChoice(t.server, 0);
      expect(holds(none.runs.get(1), s, 8192)).toBe(true);
      expect(none.hostPids.get(1)).toBe(t.server);
      expect(holds(none.runs.get(2), f + 4096, 4096)).toBe(true);
      expect(touches(none.runs.get(2), f, 4096) || touches(none.runs.get(2), f + 8192, 8192)).toBe(false);
      expect(touches(none.runs.get(2), a, 3 * 4096) || touches(none.runs.get(2), b, 64 * 4096)).toBe(false);
      // A budget the kernel's 64-page mapping does not fit in (with its smaller ones taken first): the 3 pages go, not the 64.
      const some = await precopyChoice(t.server, 60 * 4096);
      expect(holds(some.runs.get(2), a, 3 * 4096)).toBe(true);
      expect(holds(some.runs.get(2), b, 4096)).toBe(false);
      const all = await precopyChoice(t.server, 1 << 30);
      expect(holds(all.runs.get(2), a, 3 * 4096) && holds(all.runs.get(2), b, 64 * 4096)).toBe(true);
      // Sorted and apart, as a parent pagemap needs them.
      for (const runs of all.runs.values()) for (let i = 1; i < runs.length; i++) expect(runs[i]!.vaddr).toBeGreaterThanOrEqual(runs[i - 1]!.vaddr + runs[i - 1]!.bytes);
      // With the kernel's hot pages (two of the 64-page mapping's, one apart, and one it does not have): those pages
      // alone of its anonymous memory, each stretch a run, beside its written file page; the 3-page mapping stays out.
      const hot = await precopyChoice(t.server, 1 << 30, new Map([[2, [4096, b + 4096, b + 3 * 4096]]]));
      expect(hot.runs.get(2)?.filter((r) => r.vaddr >= b && r.vaddr < b + 64 * 4096)).toEqual([
        { vaddr: b + 4096, bytes: 4096 },
        { vaddr: b + 3 * 4096, bytes: 4096 },
      ]);
      expect(touches(hot.runs.get(2), a, 3 * 4096)).toBe(false);
      expect(holds(hot.runs.get(2), f + 4096, 4096)).toBe(true);
      expect(holds(hot.runs.get(1), s, 8192)).toBe(true);
      const sorted = hot.runs.get(2) ?? [];
      for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.vaddr).toBeGreaterThanOrEqual(sorted[i - 1]!.vaddr + sorted[i - 1]!.bytes);
    } finally {
      t.kill();
    }
  });

  it('should send and keep each process its memory in pagemap order, then find the pages changed since, and only those', async () => {
    const t = await sessionTree();
    try {
      const [s, a, b] = t.addresses as [number, number, number];
      const choice = await precopyChoice(t.server, 1 << 30);
      const sent = new Map<number, Buffer>();
      const p = await copyAhead(choice.hostPids, choice.runs, join(tmp(), 'ahead.bin'), async (vpid, pages) => {
        const chunks: Buffer[] = [];
        for await (const c of pages) chunks.push(Buffer.from(c));
        sent.set(vpid, Buffer.concat(chunks));
      });
      expect(p.bytes).toBe([...sent.values()].reduce((n, x) => n + x.length, 0));
      const at = (vpid: number, addr: number, n: number): string => {
        const r = p.runs.get(vpid)!.find((x) => x.vaddr <= addr && addr + n <= x.vaddr + x.bytes)!;
        const first = p.runs.get(vpid)![0]!.offset;
        return sent.get(vpid)!.subarray(r.offset - first + addr - r.vaddr, r.offset - first + addr - r.vaddr + n).toString('latin1');
      };
      expect(at(1, s, 8192)).toBe('S'.repeat(8192));
      expect(at(2, a, 3 * 4096)).toBe('a'.repeat(3 * 4096));
      expect(at(2, b, 64 * 4096)).toBe('b'.repeat(64 * 4096));
      // Nothing written since: nothing changed.
      const before = await changedSinceCopy(p, choice.hostPids);
      expect(before?.get(2)?.size).toBe(0);
      await t.touch();
      // The page written, not its neighbours (the interpreter's own heap changed too, reading the line).
      const after = (await changedSinceCopy(p, choice.hostPids))?.get(2) ?? new Set<number>();
      expect(after.has(a + 4096)).toBe(true);
      expect(after.has(a) || after.has(a + 8192) || [...after].some((x) => x >= b && x < b + 64 * 4096)).toBe(false);
      expect([...((await changedSinceCopy(p, choice.hostPids))?.get(1) ?? [])].some((x) => x >= s && x < s + 8192)).toBe(false);
    } finally {
      t.kill();
    }
  });

  it('should not compare while the session runs: waiting for criu to stop it, it gives up when that does not come', async () => {
    const t = await sessionTree();
    try {
      const choice = await precopyChoice(t.server, 1 << 30);
      const p = await copyAhead(choice.hostPids, choice.runs, join(tmp(), 'ahead.bin'), async (_vpid, pages) => {
        for await (const _ of pages);
      });
      const pids = [...choice.hostPids.values()];
      // No criu traces it (pid 1 is not a tracer here).
      const watch = frozenBy(pids, 1, { since: performance.now(), stop: new Promise(() => undefined), timeoutMs: 100 });
      expect(await watch).toBeNull();
      expect(await changedSinceCopy(p, choice.hostPids, watch)).toBeNull();
      // Nor when criu is done (or failed) first.
      expect(await frozenBy(pids, 1, { since: performance.now(), stop: Promise.resolve(), timeoutMs: 10_000 })).toBeNull();
    } finally {
      t.kill();
    }
  });

  it("should remove, at an agent's start, the copies ahead a dead agent's moves left, and nothing else", async () => {
    const work = join(tmp(), 'work');
    await mkdir(work);
    const left = snapshotPath(work, 's00000001');
    await writeFile(left, 'x');
    await writeFile(join(work, 'ahead-notes.txt'), 'x');
    await mkdir(join(work, 'in-abc'));
    expect(await removeLeftCopies(work)).toEqual([basename(left)]);
    expect((await readdir(work)).sort()).toEqual(['ahead-notes.txt', 'in-abc']);
    expect(await removeLeftCopies(join(work, 'missing'))).toEqual([]);
  });
});
