import { randomBytes } from 'node:crypto';

export function newSessionId(): string {
  return `s${randomBytes(4).toString('hex')}`;
}

/** Time-ordered so that listings sort by creation. */
export function newCheckpointId(now = Date.now()): string {
  return `c${now.toString(36)}${randomBytes(4).toString('hex')}`;
}

export function newToken(): string {
  return randomBytes(24).toString('hex');
}

/** Operations (a job flow): time-ordered too. */
export function newOperationId(now = Date.now()): string {
  return `op${now.toString(36)}${randomBytes(3).toString('hex')}`;
}
