import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockedStackPointer, buildAlignedStack, pageAlignedStacks } from '../../src/criu/lazy-stack.js';
import { run, waitFor } from '../../src/util/exec.js';
import { killQuietly } from '../../src/util/proc.js';

describe('threads that would make criu dump a process whole', () => {
  let dir: string;
  let bin: string;
  const started: ChildProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-stack-'));
    bin = await buildAlignedStack(dir);
  });

  afterAll(async () => {
    for (const p of started) if (p.pid !== undefined) killQuietly(p.pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  async function startWithOffset(offset: number): Promise<number> {
    const p = spawn(bin, [String(offset), '1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    started.push(p);
    let out = '';
    p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    const pid = await waitFor('the fixture to print its pid', async () => (out.includes('\n') ? Number(out.trim()) : undefined), { timeoutMs: 10_000 });
    // Its thread is blocked once it shows a system call with its stack pointer.
    await waitFor('its thread to block', async () => ((await run('ls', [`/proc/${pid}/task`])).stdout.trim().split('\n').length === 2 ? true : undefined), { timeoutMs: 10_000 });
    return pid;
  }

  it('should read the stack pointer of a thread blocked in the kernel, and nothing of a running one', () => {
    expect(blockedStackPointer('34 0x0 0x7f82e0ffffb0 0x7f82e511a000 0x8 0x0 0x7ffd0ba95707 0x7f82e511a000 0x564700c411c9\n')).toBe(0x7f82e511a000n);
    expect(blockedStackPointer('-1 0x7ffd0ba957d0 0x7f82e51f4df2')).toBe(0x7ffd0ba957d0n);
    expect(blockedStackPointer('running')).toBeNull();
    expect(blockedStackPointer('')).toBeNull();
  });

  it('should find a thread blocked with its stack pointer page-aligned, and no thread when it is 8 bytes off', async () => {
    const aligned = await startWithOffset(0);
    const off = await startWithOffset(8);
    await waitFor('the aligned thread to be seen', async () => ((await pageAlignedStacks([aligned])).length > 0 ? true : undefined), { timeoutMs: 5_000 });
    // The main threads' stack pointers are where ASLR put their stacks: page-aligned once in 256, not counted here.
    const found = (await pageAlignedStacks([aligned, off])).filter((t) => t.tid !== t.pid);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ pid: aligned });
    expect(BigInt(found[0]!.sp) % 4096n).toBe(0n);
  });
});
