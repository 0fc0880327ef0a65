import { spawn, type ChildProcess } from 'node:child_process';
import { PYTHON } from '../../src/util/proc.js';

/**
 * Seizes `pid` with ptrace from a process that never waits for it: killed,
 * it stays a zombie its tracer holds, and a PID-namespace init killed above
 * it is left exiting (state S, PF_EXITING) until the tracer is killed.
 * Resolves once the seize has succeeded; the caller kills the tracer by pid.
 */
export async function traceWithoutReaping(pid: number): Promise<ChildProcess> {
  const script = `import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(0x4206, ${pid}, None, None), ctypes.get_errno(), flush=True)\ntime.sleep(600)`;
  const tracer = spawn(PYTHON, ['-I', '-S', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
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
