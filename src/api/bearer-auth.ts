import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { UnauthorizedError } from '../core/errors.js';

/** Compares in constant time: both sides hashed to equal length first, so neither length nor content leaks. */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

/** Requires `Authorization: Bearer <token>` on every request it guards. */
export function bearerAuth(token: string) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const header = req.get('authorization') ?? '';
    const m = /^Bearer (.+)$/.exec(header);
    if (!m || !tokenMatches(m[1]!, token)) {
      next(new UnauthorizedError());
      return;
    }
    next();
  };
}
