import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { AgentClient } from '../agent/agent-client.js';
import { startAgent, type RunningAgent } from '../agent/agent.js';
import { JupyterRest } from '../agent/jupyter-rest.js';
import { KernelChannel } from '../agent/kernel-channel.js';
import { removeBridge } from '../agent/network.js';
import { agentConfig } from '../agent/config.js';
import { stopEverySession } from '../agent/session-service.js';
import { isAlive } from '../util/proc.js';

interface Check {
  what: string;
  ok: boolean;
}

/**
 * What hubshift does today, end to end on this machine: a node agent, a
 * user's Jupyter session with a kernel holding state, a checkpoint that stops
 * it, a restore that brings it back with its state. Stops everything it
 * started, also on Ctrl-C.
 */
async function runDemo(opts: { sizeMib: number }): Promise<boolean> {
  const say = (m: string): void => void process.stdout.write(`${m}\n`);
  const dataDir = await mkdtemp(join(tmpdir(), 'hubshift-demo-'));
  const tag = randomBytes(2).toString('hex');
  let agent: RunningAgent | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      if (agent) {
        await stopEverySession(agent.ctx);
        await agent.close();
      }
      await removeBridge(`hsdemo${tag}`).catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    })());
  const onSignal = (): void => {
    say('\ninterrupted: stopping everything the demo started');
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const checks: Check[] = [];
  try {
    say('1. starting a node agent (own bridge and subnet, a directory checkpoint store)');
    agent = await startAgent(
      agentConfig({
        port: 0,
        dataDir,
        token: randomBytes(24).toString('hex'),
        bridge: { name: `hsdemo${tag}`, subnet: `10.221.${parseInt(tag, 16) % 250}.0/24` },
      }),
      pino({ level: 'warn' }),
    );
    const client = new AgentClient(agent.url, agent.ctx.config.token);
    say(`   agent at ${agent.url}, criu ${agent.ctx.criu.version} (${agent.ctx.criu.source})`);

    say("2. starting ada's Jupyter session in its own PID and network namespaces");
    const s = await client.startSession('ada');
    say(`   ${s.id} at ${s.url} (server pid ${s.pid})`);

    say(`3. a kernel sets x = 41 and holds ${opts.sizeMib} MiB of random bytes`);
    const rest = new JupyterRest(s.url, s.token);
    const kernel = await rest.startKernel();
    const ch = await KernelChannel.connect(s.url, s.token, kernel.id);
    const setup = await ch.execute(`x = 41\nimport os, hashlib\nblob = os.urandom(${opts.sizeMib} * 2**20)\nprint(hashlib.sha256(blob).hexdigest())`, 120_000);
    const hash = setup.stdout.trim();
    say(`   sha256 of the bytes: ${hash.slice(0, 16)}...`);

    say('4. checkpoint: criu freezes the session into the store and the processes stop');
    const ck = await client.checkpoint(s.id);
    say(`   ${ck.checkpoint}: ${(ck.bytes / 2 ** 20).toFixed(0)} MiB in ${ck.seconds.toFixed(2)} s`);
    checks.push({ what: 'the session processes are gone after the checkpoint', ok: !(await isAlive(s.pid as number)) });
    checks.push({ what: 'the session url does not answer while checkpointed', ok: !(await rest.answers(1_000)) });

    say('5. restore: every blob verified against the manifest, then criu brings it back');
    const r = await client.restore(ck.checkpoint);
    say(`   ${r.id} running again at ${r.url} in ${r.seconds.toFixed(2)} s`);
    checks.push({ what: 'same session id, url and token', ok: r.id === s.id && r.url === s.url && r.token === s.token });
    const answer = await ch.execute('print(x + 1, hashlib.sha256(blob).hexdigest())', 60_000);
    const [val, h2] = answer.stdout.trim().split(' ');
    checks.push({ what: 'the kernel answers x + 1 = 42 on the websocket opened before the checkpoint', ok: val === '42' });
    checks.push({ what: 'the kernel still holds the same bytes', ok: h2 === hash });
    ch.close();

    say('\nreport');
    for (const c of checks) say(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.what}`);
    return checks.every((c) => c.ok);
  } finally {
    await cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('show checkpoint and restore of a real Jupyter session on this machine; exits non-zero if a check fails')
    .option('--size-mib <n>', 'memory the demo kernel holds', (v) => Number(v), 256)
    .option('--headless', 'no interaction (the demo never waits for input yet; kept for CI)', false)
    .action(async (o: { sizeMib: number }) => {
      const ok = await runDemo({ sizeMib: o.sizeMib });
      process.exitCode = ok ? 0 : 1;
    });
}
