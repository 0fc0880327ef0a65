import { execFile, spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../src/util/exec.js';

const exec = promisify(execFile);

describe('npm run demo', () => {
  it('should play every scenario headless, pass every check of its report, and leave nothing behind', async () => {
    const before = new Set((await readdir(tmpdir())).filter((n) => /^hubshift-(demo|hub|redis)-/.test(n)));
    const { stdout } = await exec(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'demo', '--headless'], { timeout: 600_000, maxBuffer: 16 * 2 ** 20 });
    const report = stdout.slice(stdout.indexOf('\nreport'));
    expect(report).toContain('checks:');
    expect(report).not.toContain('FAIL');
    // Every scenario ran and was checked: idle and wake, spot eviction, right-sizing, consolidation, the ledger.
    for (const what of [/idle policy checkpointed/, /without dee's token does not wake/, /woke dee's session/, /left host-1 before the deadline/, /right-sizing moved dee/, /consolidation released/, /the scheduler forgot host-/, /the scheduler forgot host-1, which the cloud took/, /no session lost/, /savings by cause add up/]) {
      expect(report).toMatch(what);
    }
    expect(report.match(/^ {2}ok /gm)?.length).toBeGreaterThanOrEqual(10);
    expect(report).toMatch(/\[idle\]/);
    expect(report).toMatch(/\[spot-eviction\]/);
    expect(report).toMatch(/\[rightsize\]/);
    expect(report).toMatch(/release-node .*\[consolidate\]/);
    // Bytes moved by each checkpoint and move, as the agents reported them.
    expect(report).toMatch(/migrate .* MiB moved, downtime/);

    const { stdout: links } = await exec('ip', ['-o', 'link', 'show']);
    expect(links).not.toMatch(/hsdemo/);
    const { stdout: netns } = await exec('ip', ['netns', 'list']);
    expect(netns).not.toMatch(/hsh-host-/);
    const { stdout: rules } = await exec('iptables', ['-S']);
    expect(rules).not.toMatch(/CRIU/);
    expect((await readdir(tmpdir())).filter((n) => /^hubshift-(demo|hub|redis)-/.test(n) && !before.has(n))).toEqual([]);
  }, 660_000);
});

describe('npm run demo, interrupted', () => {
  it('should stop everything it started on Ctrl-C, exit 130, and leave nothing behind', async () => {
    const before = new Set((await readdir(tmpdir())).filter((n) => /^hubshift-(demo|hub|redis)-/.test(n)));
    const child = spawn(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      // Mid-way: the hosts and the hub are up and the first user is being spawned.
      await waitFor('the demo to start its hub', async () => (/starting JupyterHub/.test(out) ? true : undefined), { timeoutMs: 120_000, intervalMs: 200 });
      child.kill('SIGINT');
      expect(await exited).toBe(130);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(out).toContain('interrupted: stopping everything the demo started');
    const { stdout: links } = await exec('ip', ['-o', 'link', 'show']);
    expect(links).not.toMatch(/hsdemo/);
    const { stdout: netns } = await exec('ip', ['netns', 'list']);
    expect(netns).not.toMatch(/hsh-host-/);
    expect((await readdir(tmpdir())).filter((n) => /^hubshift-(demo|hub|redis)-/.test(n) && !before.has(n))).toEqual([]);
  }, 240_000);
});
