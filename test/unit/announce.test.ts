import { createSocket, type Socket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { announce, prepareAnnounce } from '../../src/agent/network.js';
import { spawnHelperPid, useSpawnHelper } from '../../src/util/exec.js';

/**
 * The announcement made ready ahead of a move's commit, run in this test's
 * own network namespace toward a UDP socket on loopback (standing in for a
 * session's namespace and its gateway).
 */
describe("a moved-in session's announcement, made ready before its commit", () => {
  let socket: Socket;
  let port: number;
  const got: string[] = [];

  beforeAll(async () => {
    socket = createSocket('udp4');
    socket.on('message', (m) => got.push(m.toString()));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    port = socket.address().port;
  });
  afterAll(() => socket.close());

  const arrived = async (n: number): Promise<void> => {
    for (let i = 0; i < 50 && got.length < n; i++) await new Promise((r) => setTimeout(r, 20));
  };

  const checks = (): void => {
    it('should send its packet when fired, and only then', async () => {
      got.length = 0;
      const a = await prepareAnnounce(process.pid, '127.0.0.1', 'lo', port);
      await new Promise((r) => setTimeout(r, 200));
      expect(got).toEqual([]);
      await a.fire();
      await arrived(1);
      expect(got).toEqual(['hubshift']);
      // Once only.
      await a.fire();
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toHaveLength(1);
    });

    it('should send nothing once cancelled, nor when fired after', async () => {
      got.length = 0;
      const a = await prepareAnnounce(process.pid, '127.0.0.1', 'lo', port);
      await new Promise((r) => setTimeout(r, 100));
      a.cancel();
      await a.fire();
      await new Promise((r) => setTimeout(r, 300));
      expect(got).toEqual([]);
    });

    it('should announce the plain way, without failing, when the ready process is gone by the time it is fired', async () => {
      got.length = 0;
      // No such pid: nsenter fails at once; fire then announces the plain way, which fails the same (allowed).
      const gone = await prepareAnnounce(2 ** 22 + 1, '127.0.0.1', 'lo', port);
      await new Promise((r) => setTimeout(r, 200));
      await expect(gone.fire()).resolves.toBeUndefined();
      expect(got).toEqual([]);
    });
  };

  // This process forks the announcing shell itself (before any spawn helper is in use here), then from the helper.
  describe('started by this process', () => {
    it('should use no spawn helper', () => expect(spawnHelperPid()).toBeUndefined());
    checks();
  });

  describe('started from the spawn helper', () => {
    beforeAll(() => useSpawnHelper());
    it('should use the spawn helper', () => expect(spawnHelperPid()).toBeGreaterThan(0));
    checks();
  });

  it('should send the plain announcement to the port it is given', async () => {
    got.length = 0;
    await announce(process.pid, '127.0.0.1', 'lo', port);
    await arrived(1);
    expect(got).toEqual(['hubshift']);
  });
});
