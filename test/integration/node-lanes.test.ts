import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../src/scheduler/keys.js';
import { NodeLanes, nodeLaneState } from '../../src/scheduler/node-lanes.js';
import { closeRedis, connectRedis, type RedisConnection } from '../../src/scheduler/redis.js';
import { sleep } from '../../src/util/exec.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

/** The lanes off a node, against a real Redis: how many sessions leave it at once, across workers. */
describe('lanes off a node', () => {
  let redis: TestRedis;
  let conn: RedisConnection;
  let other: RedisConnection;

  beforeAll(async () => {
    redis = await startRedis();
    conn = connectRedis(redis.url, 'lanes-test');
    // A second connection stands in for another worker.
    other = connectRedis(redis.url, 'lanes-test-2');
  });
  afterAll(async () => {
    if (conn) await closeRedis(conn);
    if (other) await closeRedis(other);
    await redis?.close();
  });

  it('should let one step at a time off a node with one lane, the next as soon as it is free, other nodes not held', async () => {
    const a = new NodeLanes(conn, 1, 5_000, 20);
    const b = new NodeLanes(other, 1, 5_000, 20);
    const first = await a.take('n1', 'op1:move');
    let waited = 0;
    let secondAt = 0;
    const second = b.take('n1', 'op2:move', () => waited++).then((l) => {
      secondAt = performance.now();
      return l;
    });
    // Another node's lane is its own.
    const elsewhere = await b.take('n2', 'op3:move');
    await sleep(200);
    expect(secondAt).toBe(0);
    expect(waited).toBe(1);
    const freedAt = performance.now();
    await first.release();
    const held = await second;
    expect(secondAt).toBeGreaterThanOrEqual(freedAt);
    expect(secondAt - freedAt).toBeLessThan(500);
    await held.release();
    await elsewhere.release();
    expect(await conn.zcard(keys.nodeLanes('n1'))).toBe(0);
  });

  it('should let as many at once as the node has lanes', async () => {
    const lanes = new NodeLanes(conn, 2, 5_000, 20);
    const held = await Promise.all([lanes.take('n1', 'a'), lanes.take('n1', 'b')]);
    let third = false;
    const pending = lanes.take('n1', 'c').then((l) => {
      third = true;
      return l;
    });
    await sleep(150);
    expect(third).toBe(false);
    await held[0]!.release();
    const c = await pending;
    expect(third).toBe(true);
    await Promise.all([held[1]!.release(), c.release()]);
  });

  it('should give the lane to the waiting steps in the order they first asked, past one whose worker died while waiting', async () => {
    const lanes = new NodeLanes(conn, 1, 5_000, 20);
    const first = await lanes.take('n4', 'op0:move');
    // A waiter that asked once and died: its turn lapses after 3 s without asking.
    const [sec = 0, usec = 0] = (await conn.time()).map(Number);
    const now = sec * 1000 + Math.floor(usec / 1000);
    await conn.zadd(keys.nodeLaneQueue('n4'), 0, 'dead:move');
    await conn.hset(keys.nodeLaneSeen('n4'), 'dead:move', String(now - 5_000));
    const order: string[] = [];
    const waiters: Promise<void>[] = [];
    for (const name of ['op1:move', 'op2:move', 'op3:move']) {
      waiters.push(
        lanes.take('n4', name).then(async (l) => {
          order.push(name);
          await sleep(50);
          await l.release();
        }),
      );
      // Each asks for the first time after the one before.
      await sleep(60);
    }
    await first.release();
    await Promise.all(waiters);
    expect(order).toEqual(['op1:move', 'op2:move', 'op3:move']);
    expect(await conn.zcard(keys.nodeLaneQueue('n4'))).toBe(0);
  });

  it('should hand a lane freed in this process to its waiter at once, without waiting for the next poll', async () => {
    const lanes = new NodeLanes(conn, 1, 5_000, 5_000);
    const first = await lanes.take('n5', 'op1:checkpoint');
    const pending = lanes.take('n5', 'op2:checkpoint');
    await sleep(100);
    const freedAt = performance.now();
    await first.release();
    const second = await pending;
    expect(performance.now() - freedAt).toBeLessThan(1_000);
    await second.release();
  });

  it("should say who holds a node's lanes and who waits, in turn, leaving out run-out leases and waiters that stopped asking", async () => {
    const [sec = 0, usec = 0] = (await conn.time()).map(Number);
    const now = sec * 1000 + Math.floor(usec / 1000);
    expect(await nodeLaneState(conn, 'n6')).toEqual({ leaving: [], waiting: [] });
    const first = await new NodeLanes(conn, 1, 5_000, 20).take('n6', 'op1:move');
    // Waiters in another worker, in this order.
    const slow = new NodeLanes(other, 1, 5_000, 300);
    const second = slow.take('n6', 'op2:checkpoint');
    await sleep(50);
    const third = slow.take('n6', 'op3:move');
    await sleep(50);
    // A dead worker's: a lease run out, and a waiter silent for 4 s (the waiters above, polling every 300 ms, drop it after 6).
    await conn.zadd(keys.nodeLanes('n6'), now - 1_000, 'dead:move');
    await conn.zadd(keys.nodeLaneQueue('n6'), 0, 'gone:move');
    await conn.hset(keys.nodeLaneSeen('n6'), 'gone:move', String(now - 4_000));
    expect(await nodeLaneState(conn, 'n6')).toEqual({ leaving: ['op1:move'], waiting: ['op2:checkpoint', 'op3:move'] });
    await conn.zrem(keys.nodeLaneQueue('n6'), 'gone:move');
    await first.release();
    const held = await second;
    expect((await nodeLaneState(conn, 'n6')).leaving).toEqual(['op2:checkpoint']);
    await held.release();
    await (await third).release();
  });

  it('should refuse fewer than one lane', () => {
    expect(() => new NodeLanes(conn, 0, 5_000)).toThrow(/at least one lane/);
    expect(() => new NodeLanes(conn, 1.5, 5_000)).toThrow(/at least one lane/);
  });

  it('should give a retried step its own lane back at once', async () => {
    const lanes = new NodeLanes(conn, 1, 5_000, 20);
    const first = await lanes.take('n1', 'op9:move');
    const t0 = performance.now();
    // The same step again (a worker retrying it): not kept waiting on itself.
    const again = await lanes.take('n1', 'op9:move');
    expect(performance.now() - t0).toBeLessThan(200);
    await again.release();
    await first.release();
  });

  it('should free the lane of a worker that died once its lease runs out, and keep a live holder\'s lease renewed', async () => {
    const lanes = new NodeLanes(conn, 1, 600, 20);
    // A dead worker's lane: a lease nobody renews, ending 600 ms from now on Redis's clock.
    const [sec = 0, usec = 0] = (await conn.time()).map(Number);
    await conn.zadd(keys.nodeLanes('n1'), sec * 1000 + Math.floor(usec / 1000) + 600, 'dead:move');
    const t0 = performance.now();
    const mine = await lanes.take('n1', 'live:move');
    expect(performance.now() - t0).toBeGreaterThan(400);
    // Held past several lease lengths: renewed, so nobody else gets in.
    let intruder = false;
    const pending = new NodeLanes(other, 1, 600, 20).take('n1', 'late:move').then((l) => {
      intruder = true;
      return l;
    });
    await sleep(1_500);
    expect(intruder).toBe(false);
    await mine.release();
    await (await pending).release();
  });
});
