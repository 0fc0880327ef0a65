import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { useTempDir } from '../helpers/temp-dir.js';

const exec = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/hubshift.js');
const RECORDER = join(import.meta.dirname, '../helpers/record-loads.mjs');

/** The npm packages whose modules `hubshift ARGS` loaded, by name. */
async function packagesLoaded(dir: string, args: string[]): Promise<Set<string>> {
  const file = join(dir, `loaded-${args.join('-')}.txt`);
  await exec(process.execPath, ['--import', RECORDER, BIN, ...args], { env: { ...process.env, HUBSHIFT_LOADED_FILE: file }, timeout: 60_000 });
  const urls = (await readFile(file, 'utf8')).split('\n');
  return new Set(urls.flatMap((u) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1] ?? []));
}

// Every command registers at start; its own code (the agent, the scheduler, the AWS SDK, the policy engine and the
// simulator) loads in its action. One static import of a constant beside the EC2 client had the SDK load for every
// command, 0.65 s of each start; the policy engine and the simulator took 0.3 s more.
describe('the hubshift command at its start', () => {
  const dir = useTempDir('hubshift-cli-start-');
  // What only some commands' actions use (yaml and croner: the policies, the price table and the simulator).
  const HEAVY = ['@aws-sdk/client-ec2', '@aws-sdk/client-s3', '@aws-sdk/lib-storage', 'bullmq', 'ioredis', 'express', 'prom-client', 'yaml', 'croner'];

  it.each(['--help', 'session ls --help', 'agent --help', 'simulate --help', 'local up --help'])('should load none of the packages only some actions use for `hubshift %s`', async (line) => {
    const loaded = await packagesLoaded(dir(), line.split(' '));
    // What every command needs, seen: the recorder works.
    expect(loaded).toContain('commander');
    expect(HEAVY.filter((p) => loaded.has(p))).toEqual([]);
  });
});

// README: exit status 0 ok, 1 failed, 2 bad input; commander's own refusals are bad input too.
describe('the hubshift command refusing its usage', () => {
  async function exitOf(args: string[]): Promise<{ code: number; stderr: string }> {
    return exec(process.execPath, [BIN, ...args], { timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
    );
  }

  it('should exit 2 for an unknown command, a missing or unknown option and a value not among the choices, and 0 for help', async () => {
    const [unknown, missing, option, choice, help] = await Promise.all([
      exitOf(['nosuch']),
      exitOf(['session', 'ls']),
      exitOf(['session', 'ls', '--token-file', '/dev/null', '--bogus']),
      exitOf(['migrate', 's1', '--agent', 'http://127.0.0.1:9', '--to', 'http://127.0.0.1:9', '--token-file', '/dev/null', '--mode', 'teleport']),
      exitOf(['session', '--help']),
    ]);
    expect(unknown).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown command 'nosuch'/) });
    expect(missing).toMatchObject({ code: 2, stderr: expect.stringMatching(/required option '--token-file <file>' not specified/) });
    expect(option).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown option '--bogus'/) });
    expect(choice).toMatchObject({ code: 2, stderr: expect.stringMatching(/'teleport' is invalid/) });
    expect(help.code).toBe(0);
  });
});
