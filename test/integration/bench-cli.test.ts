import { execFile, spawn } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/exec.js';
import { isAlive, procState, processTree } from '../../src/util/proc.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const TSX = join(ROOT, 'node_modules/.bin/tsx');
const RUN = join(ROOT, 'test/bench/run.ts');

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return exec(TSX, [RUN, ...args], { cwd: ROOT, timeout: 60_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
  );
}

/** A process's command line and state letter (T: stopped, t: stopped by its tracer), for a failure's message. */
async function describeProcess(pid: number): Promise<string> {
  try {
    const cmd = (await readFile(`/proc/${pid}/cmdline`, 'latin1')).replace(/\0/g, ' ').trim().slice(0, 120);
    return `${cmd} [${procState(await readFile(`/proc/${pid}/stat`, 'utf8'))}]`;
  } catch {
    return 'gone';
  }
}

describe('npm run bench --', () => {
  it('should say what it runs with --help, and refuse unknown benches and options before running anything', async () => {
    const help = await bench(['--help']);
    expect(help.code).toBe(0);
    for (const what of ['checkpoint', 'control', 'migrate', 'wake', '--sizes', '--rounds', '--modes', '--keep-logs', '--json']) expect(help.stdout).toContain(what);
    expect(help.stderr).not.toMatch(/bench: /);

    const option = await bench(['--bogus']);
    expect(option.code).toBe(2);
    expect(option.stderr).toMatch(/unknown option '--bogus'/);
    const name = await bench(['nope']);
    expect(name.code).toBe(2);
    expect(name.stderr).toMatch(/unknown bench "nope"; known: checkpoint, control, migrate, wake/);
    const modes = await bench(['migrate', '--modes', 'teleport']);
    expect(modes.stderr).toMatch(/--modes.*got "teleport"/);
    const sizes = await bench(['--sizes', '256,big']);
    expect(sizes.stderr).toMatch(/--sizes.*whole MiB/);
    for (const r of [option, name, modes, sizes]) expect(r.stderr).not.toMatch(/bench: .*filling/);
  });

  it('should stop the agent and the session it started when interrupted mid-run, and exit 143', async () => {
    const before = new Set((await readdir(tmpdir())).filter((n) => n.startsWith('hubshift-')));
    const linksBefore = (await exec('ip', ['-o', 'link', 'show'])).stdout.match(/^\d+: (hs[tv][0-9a-f]+)/gm)?.map((l) => l.split(': ')[1]!) ?? [];
    const child = spawn(TSX, [RUN, 'checkpoint', '--sizes', '64'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let started: number[] = [];
    // Each started process's command line and state, as seen when the bench was interrupted: named in a failure.
    const seen = new Map<number, string>();
    try {
      // Mid-way: the agent runs the session, whose kernel holds its bytes, and the first checkpoint is under way.
      await waitFor('the bench to checkpoint', async () => (/checkpoint 1/.test(err) ? true : undefined), { timeoutMs: 120_000, intervalMs: 100 });
      started = await processTree(child.pid!);
      for (const pid of started) seen.set(pid, await describeProcess(pid));
      expect(started.length).toBeGreaterThan(3);
      child.kill('SIGTERM');
      // What the bench starts from here on (a criu dump of the checkpoint under way) is counted too, until it exits.
      const watching = setInterval(() => {
        void processTree(child.pid!).then(async (now) => {
          for (const pid of now.filter((p) => !seen.has(p))) {
            started.push(pid);
            seen.set(pid, await describeProcess(pid));
          }
        });
      }, 20);
      const code = await exited.finally(() => clearInterval(watching));
      expect(code).toBe(143);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    try {
      expect(err).toContain('interrupted (SIGTERM): stopping what the bench started');
      // Its processes (the agent's helpers, the session's server and kernel) were stopped, not left to the next run.
      await waitFor('every process the bench started to end', async () => ((await Promise.all(started.map(isAlive))).some(Boolean) ? undefined : true), { timeoutMs: 10_000, intervalMs: 100 }).catch(async (timedOut: unknown) => {
        const left = [];
        for (const pid of started) if (await isAlive(pid)) left.push(`${pid} (${seen.get(pid) ?? '?'}; now ${await describeProcess(pid)})`);
        throw new Error(`${(timedOut as Error).message}; still alive: ${left.join(', ')}; the bench said: ${err.slice(-600)}`);
      });
      expect((await exec('ip', ['netns', 'list'])).stdout).not.toMatch(/^hs-s/m);
      expect((await readdir(tmpdir())).filter((n) => n.startsWith('hubshift-') && !before.has(n))).toEqual([]);
    } finally {
      // Had the bench left anything, this test removes it: by pid, and by the names the bench's agent made.
      for (const pid of started) if (await isAlive(pid)) process.kill(pid, 'SIGKILL');
      for (const ns of (await exec('ip', ['netns', 'list'])).stdout.match(/^hs-s\S+/gm) ?? []) await exec('ip', ['netns', 'del', ns]).catch(() => undefined);
      for (const link of (await exec('ip', ['-o', 'link', 'show'])).stdout.match(/^\d+: (hs[tv][0-9a-f]+)/gm) ?? []) {
        const name = link.split(': ')[1]!;
        if (!linksBefore.includes(name)) await exec('ip', ['link', 'del', name]).catch(() => undefined);
      }
      for (const n of (await readdir(tmpdir())).filter((n) => n.startsWith('hubshift-') && !before.has(n))) await rm(join(tmpdir(), n), { recursive: true, force: true });
    }
  });
});
