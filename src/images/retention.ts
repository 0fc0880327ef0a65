import type { ImageStore } from './image-store.js';

/**
 * Keeps a session's newest `keep` checkpoints and deletes the rest (never
 * one in `protect`: the checkpoint just taken, the one the session will be
 * restored from). Returns the ids deleted. `store` is the session's user's
 * view, so only that user's checkpoints are read.
 */
export async function expireCheckpoints(store: ImageStore, sessionId: string, keep: number, protect: readonly string[]): Promise<string[]> {
  if (keep <= 0) return [];
  const mine: { id: string; createdAt: string }[] = [];
  for (const id of await store.list()) {
    const m = await store.getManifest(id).catch(() => null);
    if (m?.sessionId === sessionId) mine.push({ id, createdAt: m.createdAt });
  }
  mine.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
  const doomed = mine.slice(keep).filter((c) => !protect.includes(c.id));
  for (const c of doomed) await store.delete(c.id);
  return doomed.map((c) => c.id);
}
