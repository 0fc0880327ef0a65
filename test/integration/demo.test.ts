import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const exec = promisify(execFile);

describe('npm run demo', () => {
  it('should run headless, pass every check of its report, and leave no bridge behind', async () => {
    const { stdout } = await exec(process.execPath, [join(import.meta.dirname, '../../bin/hubshift.js'), 'demo', '--headless', '--size-mib', '64'], { timeout: 180_000 });
    expect(stdout).toContain('report');
    expect(stdout).not.toContain('FAIL');
    expect(stdout.match(/^ {2}ok /gm)?.length).toBe(5);
    const bridge = /10\.221\.(\d+)\./.exec(stdout);
    expect(bridge).not.toBeNull();
    const { stdout: links } = await exec('ip', ['-o', 'link', 'show', 'type', 'bridge']);
    expect(links).not.toMatch(/hsdemo/);
  });
});
