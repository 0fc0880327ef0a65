import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/agent-client.js';
import { AGENT_NODE_OPTIONS } from '../../src/agent/node-options.js';
import { readLocalHosts } from '../../src/cloud/local-provider.js';
import { runHubshift as hubshift } from '../helpers/control-plane.js';

describe('hubshift local', () => {
  let stateDir: string;
  let local: string[];
  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'hubshift-cli-local-'));
    local = ['--state-dir', stateDir, '--bridge', 'hscl0', '--subnet', '10.253.0.0/16'];
  });
  afterAll(async () => {
    // Whatever a failed assertion left up.
    await hubshift(['local', 'down', ...local]);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('should bring test hosts up, schedule a notice on one, and take everything down', async () => {
    const up = await hubshift(['local', 'up', '--hosts', '2', '--spot', '1', ...local, '--json']);
    expect(up.code, up.stderr).toBe(0);
    const { hosts } = JSON.parse(up.stdout) as { hosts: { name: string; agent: string; tokenFile: string; lifecycle: string }[] };
    expect(hosts.map((h) => [h.name, h.lifecycle])).toEqual([
      ['host-1', 'spot'],
      ['host-2', 'on-demand'],
    ]);
    for (const h of hosts) {
      const health = await new AgentClient(h.agent, (await readFile(h.tokenFile, 'utf8')).trim()).health();
      expect(health.ok).toBe(true);
    }
    // Each agent runs under node with the agent's options (src/agent/node-options.ts), so it does not warn of them.
    for (const r of (await readLocalHosts(stateDir)).hosts) {
      expect((await readFile(`/proc/${r.agentPid}/cmdline`, 'utf8')).split('\0')).toEqual(expect.arrayContaining([...AGENT_NODE_OPTIONS]));
      expect(await readFile(join(r.dataDir, 'agent.log'), 'utf8')).not.toMatch(/runs this agent without/);
    }
    const again = await hubshift(['local', 'up', '--hosts', '1', ...local]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already up/);

    const notice = await hubshift(['local', 'notice', 'host-1', '--in', '30', ...local, '--json']);
    expect(notice.code, notice.stderr).toBe(0);
    expect(JSON.parse(notice.stdout)).toMatchObject({ host: 'host-1', notice: { action: 'terminate' } });

    const down = await hubshift(['local', 'down', ...local, '--json']);
    expect(JSON.parse(down.stdout)).toEqual({ removed: 2 });
    expect(existsSync('/run/netns/hsh-host-1')).toBe(false);
    expect(existsSync('/sys/class/net/hscl0')).toBe(false);
  });
});
