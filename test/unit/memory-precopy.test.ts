import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { precopySessionMemory } from '../../src/agent/memory-precopy.js';
import { processTree } from '../../src/util/proc.js';

/**
 * A session's process tree in a pid namespace of its own, as the agent runs
 * one: its first process (pid 1, the "server") holding 2 private pages of 'S', and a
 * child (a "kernel") holding 3 pages of 'a' and, apart, 64 of 'b'. Prints
 * the three addresses; killed by the caller.
 */
async function sessionTree(): Promise<{ server: number; addresses: number[]; kill: () => void }> {
  const py = [
    'import mmap, ctypes, os, sys, time',
    'def hold(n, c):',
    '    m = mmap.mmap(-1, n * 4096, flags=mmap.MAP_PRIVATE)',
    '    m.write(c * (n * 4096))',
    '    return m',
    'addr = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))',
    "s = hold(2, b'S')",
    'r, w = os.pipe()',
    'if os.fork() == 0:',
    "    a, b = hold(3, b'a'), hold(64, b'b')",
    "    os.write(w, f'{addr(a)} {addr(b)}'.encode())",
    '    time.sleep(60)',
    "print(addr(s), os.read(r, 100).decode(), flush=True)",
    'time.sleep(60)',
  ].join('\n');
  const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '/usr/bin/python3', '-c', py], { stdio: ['ignore', 'pipe', 'ignore'] });
  const kill = (): void => void child.kill('SIGKILL');
  try {
    const [line] = (await once(child.stdout!, 'data')) as [Buffer];
    const [server] = (await processTree(child.pid!)).slice(1);
    return { server: server!, addresses: line.toString().trim().split(/\s+/).map(Number), kill };
  } catch (err) {
    kill();
    throw err;
  }
}

describe("a post-copy move's pre-copy", () => {
  it("should copy the server's anonymous memory and, of the kernels', the mappings with the least of it up to the budget", async () => {
    const t = await sessionTree();
    try {
      const [s, a, b] = t.addresses as [number, number, number];
      const holds = (runs: { vaddr: number; data: Buffer }[] | undefined, at: number, pages: number, c: string): boolean =>
        (runs ?? []).some((r) => r.vaddr <= at && at + pages * 4096 <= r.vaddr + r.data.length && r.data.subarray(at - r.vaddr, at - r.vaddr + pages * 4096).equals(Buffer.alloc(pages * 4096, c)));
      // No budget: the server's memory only, every run of it by its pid in the namespace.
      const none = await precopySessionMemory(t.server, 0);
      expect([...none.runs.keys()]).toEqual([1]);
      expect(holds(none.runs.get(1), s, 2, 'S')).toBe(true);
      expect(none.bytes).toBe([...none.runs.values()].flat().reduce((n, r) => n + r.data.length, 0));
      // A budget the kernel's 64-page mapping does not fit in (with its smaller ones taken first): the 3 pages go, not the 64.
      const some = await precopySessionMemory(t.server, 60 * 4096);
      expect(holds(some.runs.get(2), a, 3, 'a')).toBe(true);
      expect(holds(some.runs.get(2), b, 1, 'b')).toBe(false);
      // Room for all of it.
      const all = await precopySessionMemory(t.server, 1 << 30);
      expect(holds(all.runs.get(2), a, 3, 'a') && holds(all.runs.get(2), b, 64, 'b')).toBe(true);
      // Each process's runs sorted and apart, as a parent pagemap needs them.
      for (const runs of all.runs.values()) for (let i = 1; i < runs.length; i++) expect(runs[i]!.vaddr).toBeGreaterThanOrEqual(runs[i - 1]!.vaddr + runs[i - 1]!.data.length);
    } finally {
      t.kill();
    }
  });
});
