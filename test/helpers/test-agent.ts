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
 * A real agent in this process, on a bridge and subnet of its own, so test
 * files never collide with each other or with an agent a developer runs.
 */
export async function startTestAgent(overrides: Partial<AgentConfig> = {}): Promise<TestAgent> {
  const dataDir = await mkdtemp(join(tmpdir(), 'hubshift-agent-'));
  const token = randomBytes(24).toString('hex');
  const tag = randomBytes(2).toString('hex');
  const config = agentConfig({
    port: 0,
    dataDir,
    token,
    bridge: { name: `hst${tag}`, subnet: `10.220.${parseInt(tag, 16) % 250}.0/24` },
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
      await removeBridge(config.bridge.name).catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
