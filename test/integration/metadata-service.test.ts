import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { watchInstanceMetadata } from '../../src/agent/metadata-watcher.js';
import type { NoticeRequest } from '../../src/core/control.js';
import { startMetadataServer, type MetadataServer } from '../../src/cloud/metadata-server.js';
import { sleep, waitFor } from '../../src/util/exec.js';
import { startControlPlane, TEST_GUARDS, TEST_SPOT_EVICTION, type TestControlPlane } from '../helpers/control-plane.js';

const identity = { instanceId: 'i-0fedcba9876543210', instanceType: 'm7i.large', zone: 'us-east-1a' };

async function token(url: string, ttl?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/latest/api/token`, { method: 'PUT', headers: { ...(ttl === undefined ? {} : { 'X-aws-ec2-metadata-token-ttl-seconds': ttl }), ...headers } });
}

async function get(url: string, path: string, t?: string): Promise<Response> {
  return fetch(`${url}/latest/meta-data/${path}`, { headers: t ? { 'X-aws-ec2-metadata-token': t } : {} });
}

describe('the local instance metadata service', () => {
  let imds: MetadataServer;
  beforeAll(async () => {
    imds = await startMetadataServer(identity);
  });
  afterAll(async () => {
    await imds?.close();
  });

  it.each([[undefined], ['0'], ['21601'], ['1.5'], ['soon']])('should refuse a token with TTL %s (400)', async (ttl) => {
    expect((await token(imds.url, ttl)).status).toBe(400);
  });

  it('should refuse a token request that came through a proxy (403)', async () => {
    expect((await token(imds.url, '60', { 'X-Forwarded-For': '203.0.113.9' })).status).toBe(403);
  });

  it('should answer only with a live token: 401 without one, with a wrong one, and once it expired', async () => {
    const res = await token(imds.url, '1');
    expect(res.status).toBe(200);
    expect(res.headers.get('x-aws-ec2-metadata-token-ttl-seconds')).toBe('1');
    const t = await res.text();
    expect((await get(imds.url, 'instance-id', t)).status).toBe(200);
    expect(await (await get(imds.url, 'instance-id', t)).text()).toBe(identity.instanceId);
    expect((await get(imds.url, 'instance-id')).status).toBe(401);
    expect((await get(imds.url, 'instance-id', 'not-a-token')).status).toBe(401);
    await sleep(1_100);
    expect((await get(imds.url, 'instance-id', t)).status).toBe(401);
  });

  it('should answer 404 until a notice is scheduled, then the documented JSON', async () => {
    const t = await (await token(imds.url, '21600')).text();
    expect((await get(imds.url, 'spot/instance-action', t)).status).toBe(404);
    expect((await get(imds.url, 'events/recommendations/rebalance', t)).status).toBe(404);
    const scheduled = imds.scheduleInterruption('terminate', 120);
    const action = (await (await get(imds.url, 'spot/instance-action', t)).json()) as Record<string, unknown>;
    expect(Object.keys(action).sort()).toEqual(['action', 'time']);
    expect(action.action).toBe('terminate');
    expect(action.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(Date.parse(String(action.time))).toBe(scheduled.time.getTime());
    imds.scheduleRebalance();
    const rebalance = (await (await get(imds.url, 'events/recommendations/rebalance', t)).json()) as Record<string, unknown>;
    expect(Object.keys(rebalance)).toEqual(['noticeTime']);
    imds.clear();
    expect((await get(imds.url, 'spot/instance-action', t)).status).toBe(404);
  });
});

describe('the metadata watcher', () => {
  let imds: MetadataServer;
  let cp: TestControlPlane;
  beforeAll(async () => {
    imds = await startMetadataServer(identity);
    cp = await startControlPlane({ policies: { 'guards.yaml': TEST_GUARDS, 'spot-eviction.yaml': TEST_SPOT_EVICTION }, nodes: [] });
    await cp.client.register({ name: 'node-m', instanceId: identity.instanceId, instanceType: identity.instanceType, zone: identity.zone, lifecycle: 'spot', pricePerHour: 0.03, memoryBytes: 2 ** 33, cpus: 2, agentUrl: 'http://127.0.0.1:9', agentToken: 'a'.repeat(32) });
  });
  afterAll(async () => {
    await imds?.close();
    await cp?.close();
  });

  it('should pass each new notice to the scheduler once, with the time the metadata service gave', async () => {
    const sent: NoticeRequest[] = [];
    const w = watchInstanceMetadata({ endpoint: imds.url, intervalMs: 100, tokenTtlSeconds: 1 }, 'node-m', async (n) => {
      sent.push(n);
      await cp.client.notice(n);
    }, pino({ level: 'silent' }));
    try {
      await sleep(300);
      expect(sent).toEqual([]);
      const scheduled = imds.scheduleInterruption('stop', 90);
      const notice = await waitFor('the interruption to reach the scheduler', async () => (await cp.client.notices()).find((n) => n.kind === 'interruption'), { timeoutMs: 10_000, intervalMs: 50 });
      expect(notice).toMatchObject({ node: 'node-m', action: 'stop', deadline: scheduled.time.toISOString() });
      imds.scheduleRebalance();
      await waitFor('the rebalance recommendation', async () => ((await cp.client.notices()).some((n) => n.kind === 'rebalance') ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
      // The token lives 1 s here: polls go on past its expiry, and nothing is sent twice.
      await sleep(1_500);
      expect(sent.map((n) => n.action)).toEqual(['stop', 'rebalance']);
    } finally {
      w.stop();
    }
  });
});
