import { readFile, readdir } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { AVAILABLE_FACTOR, LANDING_PY, LandingMemory, memAvailableBytes, type LandingHold } from '../../src/agent/landing-memory.js';
import { waitFor } from '../../src/util/exec.js';
import { isAlive, killQuietly } from '../../src/util/proc.js';
import { PythonHelper } from '../../src/util/python-helper.js';

const MIB = 1 << 20;

/** The CPUs a process (or one of its threads) may run on, as /proc says them ("0-3,6"). */
async function allowedCpus(pid: number, tid = pid): Promise<string> {
  return (await readFile(`/proc/${pid}/task/${tid}/status`, 'utf8')).match(/^Cpus_allowed_list:\s+(\S+)$/m)?.[1] ?? '';
}

/** "0-3,6" as [0, 1, 2, 3, 6]. */
function cpuList(list: string): number[] {
  return list.split(',').flatMap((r) => {
    const [a, b] = r.split('-').map(Number);
    return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => a! + i);
  });
}

/** Bytes of `pid`'s private anonymous memory that is resident (its smaps_rollup). */
async function anonymousBytes(pid: number): Promise<number> {
  return Number(/^Anonymous:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0) * 1024;
}

describe("memory warmed for a restore's fill", () => {
  const holds: LandingHold[] = [];
  const pids: number[] = [];
  afterEach(async () => {
    await Promise.all(holds.splice(0).map((h) => h.release()));
    for (const pid of pids.splice(0)) killQuietly(pid, 'SIGKILL');
  });

  it("should read the node's available memory", () => {
    expect(memAvailableBytes()).toBeGreaterThan(64 * MIB);
    expect(Number.isFinite(memAvailableBytes())).toBe(true);
  });

  it('should hold the memory, faulted in, one part on each CPU, until released, and free it then and end', async () => {
    const hold = new LandingMemory(64 * MIB).warm();
    holds.push(hold);
    const seconds = await hold.ready;
    expect(seconds).toBeGreaterThanOrEqual(0);
    const pid = hold.pid as number;
    expect(pid).toBeGreaterThan(0);
    const cpus = await allowedCpus(pid);
    expect(await anonymousBytes(pid)).toBeGreaterThanOrEqual(64 * MIB - 2 * MIB * (cpuList(cpus).length - 1));
    // A thread pinned to each CPU the helper may use holds a part (the kernel keeps what it frees on that CPU's lists).
    const pinned = await Promise.all((await readdir(`/proc/${pid}/task`)).map((t) => allowedCpus(pid, Number(t))));
    expect(pinned.filter((c) => c !== cpus).sort()).toEqual(cpuList(cpus).map(String).sort());
    const before = await anonymousBytes(pid);
    await hold.release();
    expect(before - (await anonymousBytes(pid).catch(() => 0))).toBeGreaterThanOrEqual(60 * MIB);
    await waitFor('the helper to end', async () => ((await isAlive(pid)) || hold.pid !== undefined ? undefined : true), { timeoutMs: 5_000, intervalMs: 10 });
    // Twice is harmless.
    await hold.release();
  });

  it('should let go at once when released while still warming (ready then says null)', async () => {
    const hold = new LandingMemory(2048 * MIB).warm();
    holds.push(hold);
    const pid = hold.pid as number;
    await hold.release();
    expect(await hold.ready).toBeNull();
    expect(await isAlive(pid)).toBe(false);
  });

  it('should start nothing when the size is 0, or when the node has less memory available than AVAILABLE_FACTOR times it', async () => {
    for (const landing of [new LandingMemory(0), new LandingMemory(64 * MIB, () => AVAILABLE_FACTOR * 64 * MIB - 1)]) {
      const hold = landing.warm();
      expect(hold.pid).toBeUndefined();
      expect(await hold.ready).toBeNull();
      await hold.release();
    }
    // Just enough: it warms.
    const hold = new LandingMemory(16 * MIB, () => AVAILABLE_FACTOR * 16 * MIB).warm();
    holds.push(hold);
    expect(await hold.ready).toBeGreaterThanOrEqual(0);
  });

  it('should end by itself when its stdin closes (its agent died), whether it was still waiting for its size or holding memory', async () => {
    const waiting = new PythonHelper(LANDING_PY);
    pids.push(waiting.child.pid as number);
    waiting.child.stdin?.end();
    const holding = new PythonHelper(LANDING_PY);
    pids.push(holding.child.pid as number);
    holding.child.stdin?.write(`${16 * MIB}\n`);
    await new Promise<void>((resolve) => holding.child.stdout?.once('data', () => resolve()));
    holding.child.stdin?.end();
    for (const h of [waiting, holding]) {
      await waitFor('the helper to end', async () => ((await isAlive(h.child.pid as number)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 20 });
    }
  });
});
