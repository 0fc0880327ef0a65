import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadPolicyDir, parsePolicyFile, PolicyHolder } from '../../src/policy/load-policies.js';

const SHIPPED = join(import.meta.dirname, '../../policies');
let dir = '';
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('policy files', () => {
  it('should load the shipped defaults: one policy of each kind and the guards', async () => {
    const set = await loadPolicyDir(SHIPPED);
    expect(set.policies.map((p) => [p.name, p.kind]).sort()).toEqual([
      ['consolidate', 'consolidate'],
      ['idle', 'idle'],
      ['rebalance', 'rebalance'],
      ['rightsize', 'rightsize'],
      ['spot-eviction', 'spot-eviction'],
    ]);
    expect(set.guards.cooldown).toBe(30 * 60_000);
    expect(set.policies.find((p) => p.kind === 'idle')).toMatchObject({ idleFor: 1_800_000, cpuBelow: 0.05 });
  });

  it.each([
    ['kind: idle\nidleFor: soon\n', /bad\.yaml: idleFor: a duration like 90s, 30m, 2h or 1d/],
    ['kind: rightsize\nschedule: "every night"\n', /bad\.yaml: schedule: a cron expression/],
    ['kind: rightsize\nschedule: "0 3 * * *"\ntimezone: Mars/Olympus\n', /bad\.yaml: timezone: an IANA time zone/],
    ['kind: idle\nidelFor: 30m\n', /bad\.yaml: .*idelFor/],
    ['kind: teleport\n', /bad\.yaml: kind: /],
    ['kind: guards\nbudgets: {perNode: -1}\n', /bad\.yaml: budgets\.perNode: /],
    ['kind: guards\nquietHours: [{days: [mon], start: "9am", end: "17:00"}]\n', /bad\.yaml: quietHours\.0\.start: HH:MM/],
    ['kind: idle\n  bad: [indent\n', /bad\.yaml: not valid YAML/],
    ['kind: idle\n---\nkind: spot-eviction\nheadroom: 0.5\n', /bad\.yaml \(document 2\): headroom: /],
  ])('should refuse %j naming the field', (text, message) => {
    expect(() => parsePolicyFile('bad.yaml', text)).toThrow(message);
  });

  it('should refuse two policies with one name', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-policies-'));
    await writeFile(join(dir, 'a.yaml'), 'kind: idle\nname: same\n');
    await writeFile(join(dir, 'b.yaml'), 'kind: consolidate\nname: same\n');
    await expect(loadPolicyDir(dir)).rejects.toThrow('two policies are named same');
  });

  it('should keep the last good set when a reload fails validation', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-policies-'));
    await cp(SHIPPED, dir, { recursive: true });
    const holder = await PolicyHolder.open(dir);
    const before = holder.policies;
    await writeFile(join(dir, 'idle.yaml'), 'kind: idle\nidleFor: -5m\n');
    const r = await holder.reload();
    expect(r).toEqual({ ok: false, error: expect.stringContaining('idle.yaml: idleFor') });
    expect(holder.policies).toBe(before);
    await writeFile(join(dir, 'idle.yaml'), 'kind: idle\nidleFor: 10m\n');
    expect(await holder.reload()).toEqual({ ok: true });
    expect(holder.policies.policies.find((p) => p.kind === 'idle')).toMatchObject({ idleFor: 600_000 });
  });
});
