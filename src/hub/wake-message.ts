import type { PlacedSession } from '../core/control.js';

/** A checkpoint's time as the wake page says it: 2026-12-02 14:05 UTC. */
function minuteUtc(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/**
 * What the wake page and the gateway's refusals tell a user of a session not
 * answering yet. One back at an older checkpoint after its machine was
 * reclaimed says so, and from when: its user would otherwise find their
 * later work gone without a word.
 */
export function wakeMessage(s: PlacedSession): string {
  if (s.state === 'checkpointed' || s.state === 'restoring') {
    const lost = s.lostWithNode;
    if (!lost) return 'Restoring your session';
    const from = lost.checkpointAt ? `its checkpoint of ${minuteUtc(lost.checkpointAt)}` : 'its last checkpoint';
    return `Restoring your session from ${from}: the machine it ran on was taken back by the cloud, and what was done in it after that checkpoint is lost`;
  }
  if (s.state === 'starting') return 'Starting your session';
  // A move dumps as a checkpoint does: the state alone does not tell them apart.
  if (s.operation || s.state === 'checkpointing') return 'Your session is being moved or saved; it answers again in a moment';
  return `Your session is ${s.state}`;
}
