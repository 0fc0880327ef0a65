import { readFile, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../util/exec.js';

/**
 * criu 4.2.1 keeps each thread's stack page out of a lazy dump's lazy memory
 * (`is_stack()` in criu/mem.c), but tests `(sp ^ vaddr) & ~PAGE_MASK`: the
 * offset within a page, not the page. When a thread's stack pointer is
 * page-aligned at the freeze, every page of its process counts as that
 * stack page, and criu writes the whole process into the images instead of
 * serving it lazily (a post-copy move of a 256 MiB kernel then took 3 s).
 * Confirmed here on 2026-12-02 (README, "Moving sessions between hosts");
 * hubshift's build of criu tests the page (lazy-stack-page.patch), and
 * setup records whether the chosen criu does (`lazyStackExact`).
 * A thread blocked in a system call keeps its stack pointer until it wakes,
 * so it can be seen before the freeze, in /proc/PID/task/TID/syscall.
 */
export interface AlignedStack {
  pid: number;
  tid: number;
  /** The stack pointer, hex. */
  sp: string;
}

/**
 * The stack pointer of a thread blocked in the kernel, from its
 * /proc/PID/task/TID/syscall: "NR ARG1 .. ARG6 SP PC" in a system call,
 * "-1 SP PC" blocked outside one; null for "running" (or anything else).
 */
export function blockedStackPointer(syscallFile: string): bigint | null {
  const fields = syscallFile.trim().split(/\s+/);
  if (fields.length !== 9 && fields.length !== 3) return null;
  const sp = fields[fields.length - 2]!;
  return /^0x[0-9a-f]+$/i.test(sp) ? BigInt(sp) : null;
}

/** The threads of `pids` blocked with a page-aligned stack pointer: criu would dump their processes whole, none of it lazy. */
export async function pageAlignedStacks(pids: readonly number[]): Promise<AlignedStack[]> {
  const threads = (await Promise.all(pids.map(async (pid) => (await readdir(`/proc/${pid}/task`).catch(() => [] as string[])).map((tid) => ({ pid, tid: Number(tid) }))))).flat();
  const seen = await Promise.all(
    threads.map(async ({ pid, tid }) => ({ pid, tid, sp: blockedStackPointer(await readFile(`/proc/${pid}/task/${tid}/syscall`, 'utf8').catch(() => '')) })),
  );
  return seen.filter((t): t is { pid: number; tid: number; sp: bigint } => t.sp !== null && (t.sp & 0xfffn) === 0n).map((t) => ({ pid: t.pid, tid: t.tid, sp: `0x${t.sp.toString(16)}` }));
}

const ALIGNED_STACK_SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '../../infra/native/aligned-stack.c');

/**
 * Compiles infra/native/aligned-stack.c into `dir`: a process holding some
 * memory, with a thread blocked at a chosen stack pointer offset from a page
 * boundary (`aligned-stack OFFSET MIB`, prints its pid).
 */
export async function buildAlignedStack(dir: string): Promise<string> {
  const bin = join(dir, 'aligned-stack');
  await run('cc', ['-O1', '-pthread', '-o', bin, ALIGNED_STACK_SOURCE], { timeoutMs: 60_000 });
  return bin;
}
