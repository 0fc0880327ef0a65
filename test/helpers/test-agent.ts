import { run } from '../../src/util/exec.js';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startAgent, type RunningAgent } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/agent-client.js';
import { agentConfig, type AgentConfig } from '../../src/agent/config.js';
import { removeBridge } from '../../src/agent/network.js';
import { stopEverySession } from '../../src/agent/session-service.js';

export interface TestAgent {
  agent: RunningAgent;
  client: AgentClient;
  token: string;
  config: AgentConfig;
  /** Kills every session the agent knows (by pid), removes their networks and the bridge, deletes the data. */
  cleanup(): Promise<void>;
}

/**
 * A /24 under `prefix` (10.220, 10.221) that no interface on this machine has
 * an address in, and a tag for names: two live agents that drew the same
 * subnet would route each other's sessions to the wrong bridge.
 */
export async function unusedSubnet(prefix: string): Promise<{ tag: string; subnet: string }> {
  const used = new Set([...(await run('ip', ['-o', '-4', 'addr', 'show'])).stdout.matchAll(new RegExp(`inet ${prefix.replace('.', '\\.')}\\.(\\d+)\\.`, 'g'))].map((m) => Number(m[1])));
  for (let i = 0; i < 100; i++) {
    const tag = randomBytes(2).toString('hex');
    const octet = parseInt(tag, 16) % 250;
    if (!used.has(octet)) return { tag, subnet: `${prefix}.${octet}.0/24` };
  }
  throw new Error(`no unused /24 left under ${prefix}: are test bridges left over? (ip -br addr)`);
}

/**
 * A real agent in this process, on a bridge and subnet of its own, so test
 * files never collide with each other or with an agent a developer runs.
 */
export async function startTestAgent(overrides: Partial<AgentConfig> = {}): Promise<TestAgent> {
  const dataDir = await mkdtemp(join(tmpdir(), 'hubshift-agent-'));
  const token = randomBytes(24).toString('hex');
  const { tag, subnet } = await unusedSubnet('10.220');
  const config = agentConfig({
    port: 0,
    dataDir,
    token,
    bridge: { name: `hst${tag}`, subnet },
    // Tighter than production: a hung criu should fail a test quickly.
    dumpTimeoutMs: 120_000,
    restoreTimeoutMs: 60_000,
    ...overrides,
  });
  const agent = await startAgent(config, pino({ level: process.env.HUBSHIFT_TEST_LOG ?? 'silent' }));
  const client = new AgentClient(agent.url, token);
  return {
    agent,
    client,
    token,
    config,
    async cleanup() {
      await stopEverySession(agent.ctx);
      await agent.close();
      // An operation under way (its answer cut by the close) ends first, and what it left is stopped: a restore that
      // failed after the data was removed wrote its session's record again, and one that ran would leave its session
      // running. (Waited for up to a minute; swept again either way.)
      let outlasted: string[] = [];
      if (agent.ctx.registry.underWay > 0) {
        if (!(await agent.ctx.registry.idle(60_000))) outlasted = agent.ctx.registry.describeUnderWay();
        await stopEverySession(agent.ctx);
      }
      await removeBridge(config.bridge.name).catch(() => undefined);
      // A move's background watch may still be writing a record as the agent stops.
      await rm(dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
      // Said, not swallowed: what such an operation started may be left running.
      if (outlasted.length) throw new Error(`the teardown waited 60 s for operations still under way: ${outlasted.join('; ')}; what they started may be left running`);
    },
  };
}
