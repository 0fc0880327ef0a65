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
