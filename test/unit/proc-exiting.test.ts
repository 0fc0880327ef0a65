import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/exec.js';
import { childrenOf, isAlive, isRunningNow, killQuietly, procExiting } from '../../src/util/proc.js';
import { killLeavingExiting, traceWithoutReaping } from '../helpers/unreaped.js';

// A stat line's fields after the command name: state, ppid, pgrp, session, tty, tpgid, flags, ...
const stat = (comm: string, state: string, flags: number): string => `412 (${comm}) ${state} 1 412 412 0 -1 ${flags} 120 0 0 0 3 1 0 0 20 0 1 0`;

describe('procExiting', () => {
  it("should read the kernel's PF_EXITING flag, whatever the command name holds", () => {
    expect(procExiting(stat('sh', 'S', 0x40040c))).toBe(true);
    expect(procExiting(stat('sh', 'S', 0x400100))).toBe(false);
    expect(procExiting(stat('a) S 1 2 3 4 5 4 (b', 'S', 0x400100))).toBe(false);
    expect(procExiting('garbage')).toBe(false);
  });
});

describe('isRunningNow', () => {
  const started: ChildProcess[] = [];
  afterEach(() => {
    for (const c of started.splice(0)) if (c.pid) killQuietly(c.pid);
  });

  it('should say a killed PID-namespace init whose tree cannot die yet is not running, where isAlive still says alive', async () => {
    // An init whose child is traced by a process that never reaps it: killed, the init waits for its tree, exiting, in state S.
    const ns = spawn('unshare', ['--pid', '--fork', '/bin/sh', '-c', 'sleep 600 & wait'], { stdio: 'ignore' });
    started.push(ns);
    const init = await waitFor('the namespace init', async () => (await childrenOf(ns.pid!))[0], { timeoutMs: 5_000, intervalMs: 10 });
    const child = await waitFor('its child', async () => (await childrenOf(init))[0], { timeoutMs: 5_000, intervalMs: 10 });
    expect(isRunningNow(init)).toBe(true);
    const tracer = await traceWithoutReaping(child);
    started.push(tracer);
    await killLeavingExiting(init);
    expect(await isAlive(init)).toBe(true);
    expect(isRunningNow(init)).toBe(false);
    // The tracer gone, the tree dies.
    killQuietly(tracer.pid!);
    await waitFor('the init to end', async () => ((await isAlive(init)) ? undefined : true), { timeoutMs: 5_000, intervalMs: 10 });
  });
});
