import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { waitFor } from '../../src/util/exec.js';
import { killQuietly, procExiting, PYTHON, pythonScriptArgs } from '../../src/util/proc.js';

/**
 * Seizes `pid` with ptrace from a process that never waits for it: killed,
 * it stays a zombie its tracer holds, and a PID-namespace init killed above
 * it is left exiting (state S, PF_EXITING) until the tracer is killed.
 * Resolves once the seize has succeeded; the caller kills the tracer by pid.
 */
export async function traceWithoutReaping(pid: number): Promise<ChildProcess> {
  const script = `import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(0x4206, ${pid}, None, None), ctypes.get_errno(), flush=True)\ntime.sleep(600)`;
  const tracer = spawn(PYTHON, pythonScriptArgs(script), { stdio: ['ignore', 'pipe', 'inherit'] });
  const said = await new Promise<string>((resolve) => {
    tracer.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()));
    tracer.once('exit', () => resolve('exited'));
  });
  if (!said.startsWith('0 ')) {
    tracer.kill('SIGKILL');
    throw new Error(`could not seize ${pid} (PTRACE_SEIZE said ${said})`);
  }
  return tracer;
}

/** Kills `init` (a PID-namespace init whose tree cannot die yet) and waits until it has begun to exit. */
export async function killLeavingExiting(init: number): Promise<void> {
  killQuietly(init);
  await waitFor('the init to begin its exit', async () => (procExiting(await readFile(`/proc/${init}/stat`, 'utf8')) ? true : undefined), { timeoutMs: 5_000, intervalMs: 10 });
}
