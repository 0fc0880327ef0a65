import { describe, expect, it } from 'vitest';
import { PlacedSession } from '../../src/core/control.js';
import { wakeMessage } from '../../src/hub/wake-message.js';

const session = (o: Partial<PlacedSession>): PlacedSession =>
  PlacedSession.parse({ id: 's0000abcd', user: 'ann', node: null, state: 'checkpointed', url: 'http://10.0.0.2:8888/', token: 't'.repeat(32), lastCheckpoint: 'cmx0000000000abcd', operation: null, ...o });

describe('what the wake page tells a user', () => {
  it('should say a session is being restored, started or moved', () => {
    expect(wakeMessage(session({}))).toBe('Restoring your session');
    expect(wakeMessage(session({ state: 'restoring', operation: 'op1' }))).toBe('Restoring your session');
    expect(wakeMessage(session({ state: 'starting' }))).toBe('Starting your session');
    expect(wakeMessage(session({ state: 'running', node: 'n1', operation: 'op2' }))).toMatch(/being moved or saved/);
  });

  it('should tell the user of a session lost with its machine from which checkpoint it comes back, and that later work is lost', () => {
    const lostWithNode = { node: 'spot-a', at: '2026-12-02T15:00:00.000Z', checkpoint: 'cmx0000000000abcd', checkpointAt: '2026-12-02T14:05:31.000Z' };
    expect(wakeMessage(session({ lostWithNode }))).toBe(
      'Restoring your session from its checkpoint of 2026-12-02 14:05 UTC: the machine it ran on was taken back by the cloud, and what was done in it after that checkpoint is lost',
    );
    expect(wakeMessage(session({ state: 'restoring', lostWithNode: { ...lostWithNode, checkpointAt: null } }))).toMatch(/^Restoring your session from its last checkpoint: the machine/);
  });
});
