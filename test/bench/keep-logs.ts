import { cp, lstat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Copies the local test hosts' logs out of a provider's state directory into
 * `to` (`to/host-N/...`): each agent's own and criu's of every dump, restore
 * and lazy-pages daemon. Nothing else: the images and homes stay behind.
 */
export async function keepLogs(stateDir: string, to: string): Promise<void> {
  await cp(join(stateDir, 'hosts'), to, { recursive: true, filter: async (src) => src.endsWith('.log') || (await lstat(src)).isDirectory() });
}
