import { JupyterRest } from './jupyter-rest.js';
import { KernelChannel } from './kernel-channel.js';

export interface KernelState {
  rest: JupyterRest;
  kernelId: string;
  channel: KernelChannel;
  /** sha256 of the random bytes the kernel holds. */
  hash: string;
}

/** Starts a kernel through the server's REST API and fills it: x = 41 and `mb` MiB of random bytes. */
export async function kernelWithState(url: string, token: string, mb: number): Promise<KernelState> {
  // Generous: a kernel's first imports read from disk, which a large dump just before may still be flushing.
  const rest = new JupyterRest(url, token, 60_000);
  const kernel = await rest.startKernel();
  const channel = await KernelChannel.connect(url, token, kernel.id);
  const r = await channel.execute(`x = 41\nimport os, hashlib\nblob = os.urandom(${mb} * 2**20)\nprint(hashlib.sha256(blob).hexdigest())`, 120_000);
  if (r.status !== 'ok') throw new Error(`kernel setup failed: ${JSON.stringify(r.error)}`);
  return { rest, kernelId: kernel.id, channel, hash: r.stdout.trim() };
}

/** Asks the kernel for x + 1 and the hash of its bytes, on the given channel. */
export async function askState(channel: KernelChannel): Promise<{ answer: string; hash: string }> {
  const r = await channel.execute('print(x + 1, hashlib.sha256(blob).hexdigest())', 60_000);
  if (r.status !== 'ok') throw new Error(`kernel query failed: ${JSON.stringify(r.error)}`);
  const [answer, hash] = r.stdout.trim().split(' ');
  return { answer: answer ?? '', hash: hash ?? '' };
}
