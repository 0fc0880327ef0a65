import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const exec = promisify(execFile);

describe('npm run demo', () => {
  it('should play every scenario headless, pass every check of its report, and leave nothing behind', async () => {
    const before = new Set((await readdir(tmpdir())).filter((n) => n.startsWith('hubshift-demo-')));
    const { stdout } = await exec(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'demo', '--headless'], { timeout: 600_000, maxBuffer: 16 * 2 ** 20 });
    const report = stdout.slice(stdout.indexOf('\nreport'));
    expect(report).toContain('checks:');
    expect(report).not.toContain('FAIL');
    // Every scenario ran and was checked: idle and wake, spot eviction, right-sizing, consolidation, the ledger.
    for (const what of [/idle policy checkpointed/, /woke dee's session/, /left host-1 before the deadline/, /right-sizing moved dee/, /consolidation released/, /no session lost/, /savings by cause add up/]) {
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
    expect((await readdir(tmpdir())).filter((n) => n.startsWith('hubshift-demo-') && !before.has(n))).toEqual([]);
  }, 660_000);
});
