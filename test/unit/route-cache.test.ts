import { describe, expect, it } from 'vitest';
import { PlacedSession } from '../../src/core/control.js';
import { RouteCache } from '../../src/hub/route-cache.js';

const session = (id: string, prefix: string, server = ''): PlacedSession =>
  PlacedSession.parse({ id, user: 'eve', node: 'node-a', state: 'running', url: 'http://10.0.0.2:8888/', token: 't'.repeat(32), lastCheckpoint: null, operation: null, hub: { user: 'eve', server, prefix } });

describe('RouteCache', () => {
  const own = session('s0000000001', '/user/eve/');
  const lab = session('s0000000002', '/user/eve/lab/', 'lab');

  it("should not answer a named server's path with the default server it remembers (the named server may have started since)", () => {
    let t = 0;
    const cache = new RouteCache(1_000, () => t);
    cache.set('/user/eve/api/contents', own);
    expect(cache.get('/user/eve/api/kernels')).toBe(own);
    // Nothing is known of /user/eve/lab/: ask the directory.
    expect(cache.get('/user/eve/lab/api/kernels')).toBeUndefined();
    cache.set('/user/eve/lab/api/kernels', lab);
    t = 10;
    expect(cache.get('/user/eve/lab/api/kernels')).toBe(lab);
    expect(cache.get('/user/eve/api/kernels')).toBe(own);
  });

  it('should answer a shorter prefix for a longer path only where the directory said no longer one had a session', () => {
    const cache = new RouteCache(1_000, () => 0);
    // The directory gave the default server for a path in it, so /user/eve/notes/ has no session of its own.
    cache.set('/user/eve/notes/a.ipynb', own);
    expect(cache.get('/user/eve/notes/b.ipynb')).toBe(own);
    expect(cache.get('/user/eve/other/b.ipynb')).toBeUndefined();
  });

  it('should forget everything after its time, and a session it is told to forget at once', () => {
    let t = 0;
    const cache = new RouteCache(1_000, () => t);
    cache.set('/user/eve/lab/api/kernels', lab);
    t = 999;
    expect(cache.get('/user/eve/lab/')).toBe(lab);
    t = 1_000;
    expect(cache.get('/user/eve/lab/')).toBeUndefined();
    cache.set('/user/eve/lab/', lab);
    cache.forget(lab);
    expect(cache.get('/user/eve/lab/')).toBeUndefined();
  });

  it('should not grow without bound when paths are many and distinct', () => {
    let t = 0;
    const cache = new RouteCache(1_000, () => t);
    for (let i = 0; i < 10_000; i++) {
      t = i;
      cache.set(`/user/eve/f${i}/x/y`, own);
    }
    expect(cache.size).toBeLessThanOrEqual(4097);
    expect(cache.get('/user/eve/f9999/x/z')).toBe(own);
  });
});
