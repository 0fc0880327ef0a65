import type { ImageStore } from './image-store.js';

/**
 * Keeps a session's newest `keep` checkpoints and deletes the rest (never
 * one `protect` names: the checkpoint just taken, one being restored from;
 * asked right before each delete, since a restore may start meanwhile).
 * Returns the ids deleted. `store` is the session's user's view, so only
 * that user's checkpoints are read.
 */
export async function expireCheckpoints(store: ImageStore, sessionId: string, keep: number, protect: (id: string) => boolean): Promise<string[]> {
  if (keep <= 0) return [];
  const mine: { id: string; createdAt: string }[] = [];
  for (const id of await store.list()) {
    const m = await store.getManifest(id).catch(() => null);
    if (m?.sessionId === sessionId) mine.push({ id, createdAt: m.createdAt });
  }
  mine.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
  const gone: string[] = [];
  for (const c of mine.slice(keep)) {
    if (protect(c.id)) continue;
    await store.delete(c.id);
    gone.push(c.id);
  }
  return gone;
}
