import { expect } from 'vitest';
import { z } from 'zod';
import { sleep } from '../../src/util/exec.js';
import { kernelWithState, type KernelState } from './kernel.js';

/** A request the session's server is busy with; `answered` checks it came back whole. */
export interface BusyRead {
  answered(): Promise<void>;
}

/**
 * A file of `mib` MiB of random bytes, written by a new kernel of the
 * session (its channel closed after; its state stays: `kernel.kernelId`,
 * `kernel.hash`), to keep the session's Jupyter server busy: `read()` asks
 * the server for it base64-encoded, which the server reads and encodes on
 * its one thread before it answers (a second or two here), and resolves
 * 100 ms after that request went out.
 */
export async function bigFile(base: string, token: string, mib: number): Promise<{ kernel: KernelState; read(): Promise<BusyRead> }> {
  const kernel = await kernelWithState(base, token, 8);
  await kernel.channel.execute(`import os\nwith open('big.bin', 'wb') as f:\n    f.write(os.urandom(${mib} << 20))`, 120_000);
  kernel.channel.close();
  return {
    kernel,
    async read() {
      const slow = fetch(`${base}api/contents/big.bin?content=1&format=base64&type=file`, { headers: { Authorization: `token ${token}` }, signal: AbortSignal.timeout(90_000) });
      await sleep(100);
      return {
        async answered() {
          const r = await slow;
          expect(r.status).toBe(200);
          expect(z.object({ name: z.literal('big.bin'), size: z.number() }).passthrough().parse(await r.json()).size).toBe(mib << 20);
        },
      };
    },
  };
}

/**
 * A request sent to the session's server while it is busy (after `read()`),
 * which waits in its listen queue: resolves with `answered STATUS`, or the
 * code of the error that cut it (ECONNRESET), or the error itself (a
 * timeout, after 30 s).
 */
export function queuedRequest(base: string, token: string): Promise<string> {
  return fetch(`${base}api/status`, { headers: { Authorization: `token ${token}` }, signal: AbortSignal.timeout(30_000) }).then(
    (res) => `answered ${res.status}`,
    (err: unknown) => z.object({ cause: z.object({ code: z.string() }) }).safeParse(err).data?.cause.code ?? String(err),
  );
}
