import { spawn } from 'node:child_process';
import { PYTHON, pythonScriptArgs } from './proc.js';

/**
 * A detached Python guard started before it is needed, idle until it is
 * given its script. A guard must outlive its agent, so it is a process of
 * its own, and an interpreter's start costs ~0.1 s of CPU on this machine's
 * two cores: started ahead (a move's guard while the source still dumps),
 * that cost stays off the path it guards.
 *
 * The script comes on its stdin, run once the input ends; input that ends
 * without one (cancelled, or its agent died before arming it: there was
 * nothing to guard yet) ends the process. `tag` is an argument of its own on
 * its command line, so that an agent reading an old record can tell this
 * process from one that took its pid since.
 */
export interface IdleGuard {
  readonly pid: number | null;
  /** Gives the guard its script (Python, run as the module's own code); once. */
  arm(script: string): void;
  /** Ends an unarmed guard; nothing for an armed one. */
  cancel(): void;
}

// The modules the move's guard uses (incoming-guard.ts), imported while idle; -I -S: no site packages.
const BOOT = 'import os, signal, subprocess, sys, time\ns = sys.stdin.buffer.read()\nif s: exec(compile(s, "guard", "exec"))\n';

export function startIdleGuard(tag: string): IdleGuard {
  const child = spawn(PYTHON, pythonScriptArgs(BOOT, tag), { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.on('error', () => undefined);
  // A guard that died (or never started) breaks the pipe: that guard is gone either way.
  child.stdin.on('error', () => undefined);
  child.unref();
  let given = false;
  const give = (script: string): void => {
    if (given) return;
    given = true;
    child.stdin.end(script);
  };
  return { pid: child.pid ?? null, arm: give, cancel: () => give('') };
}
