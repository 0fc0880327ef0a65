import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { UnauthorizedError } from '../core/errors.js';

/** Compares in constant time: both sides hashed to equal length first, so neither length nor content leaks. */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

/** Whether the request carries `Authorization: Bearer <token>`. */
export function bearerValid(req: Request, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(req.get('authorization') ?? '');
  return m !== null && tokenMatches(m[1]!, token);
}

/** Requires `Authorization: Bearer <token>` on every request it guards. */
export function bearerAuth(token: string) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    if (!bearerValid(req, token)) {
      next(new UnauthorizedError());
      return;
    }
    next();
  };
}
