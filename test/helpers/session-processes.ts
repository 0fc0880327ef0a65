import { readFile, readdir } from 'node:fs/promises';
import { waitFor } from '../../src/util/exec.js';
import { processTree } from '../../src/util/proc.js';
import { isSessionProcess } from '../../src/agent/sandbox.js';

/** Pids of every process of session `id` on this machine (its launcher, server and kernels: their environment names it). */
export async function sessionProcesses(id: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n));
  const of = await Promise.all(pids.map(async (p) => ((await isSessionProcess(Number(p), id)) ? Number(p) : null)));
  return of.filter((p): p is number => p !== null);
}

/** Waits (10 s at most) until the only processes of session `id` are the copy whose server is `serverPid`, and the launcher that started it. */
export async function expectOnlyCopy(id: string, serverPid: number): Promise<void> {
  const launcher = Number((await readFile(`/proc/${serverPid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[1]);
  const copy = [launcher, ...(await processTree(serverPid))];
  await waitFor(`no process of session ${id} but its copy at pid ${serverPid}`, async () => ((await sessionProcesses(id)).every((p) => copy.includes(p)) ? true : undefined), { timeoutMs: 10_000, intervalMs: 100 });
}

/** KiB of process `pid`'s anonymous memory in transparent huge pages (its smaps_rollup). */
export async function anonHugePagesKiB(pid: number): Promise<number> {
  return Number(/^AnonHugePages:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
}

/** The same over the process tree of a session's server (a process gone meanwhile counts 0). */
export async function treeAnonHugePagesKiB(serverPid: number): Promise<number> {
  const each = await Promise.all((await processTree(serverPid)).map((pid) => anonHugePagesKiB(pid).catch(() => 0)));
  return each.reduce((a, b) => a + b, 0);
}

/** Bytes process `pid` holds locked in memory (its VmLck, counted in whole pages); 0 once it is gone. */
export async function lockedBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmLck:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}
