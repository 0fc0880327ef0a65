import { join } from 'node:path';
import { run } from '../../src/util/exec.js';

/**
 * Compiles test/fixtures/aligned-stack.c into `dir`: a process holding some
 * memory, with a thread blocked at a chosen stack pointer offset from a page
 * boundary (`aligned-stack OFFSET MIB`, prints its pid).
 */
export async function buildAlignedStack(dir: string): Promise<string> {
  const bin = join(dir, 'aligned-stack');
  await run('cc', ['-O1', '-pthread', '-o', bin, join(import.meta.dirname, '../fixtures/aligned-stack.c')], { timeoutMs: 60_000 });
  return bin;
}
