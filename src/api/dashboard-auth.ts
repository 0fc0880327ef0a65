import { createHmac } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { UnauthorizedError } from '../core/errors.js';
import { bearerValid, tokenMatches } from './bearer-auth.js';

export const DASHBOARD_COOKIE = 'hubshift_dashboard';
/** A browser signs in once a week. */
const COOKIE_LIFETIME_MS = 7 * 86_400_000;

function mac(token: string, expires: number): string {
  return createHmac('sha256', token).update(`hubshift-dashboard:${expires}`).digest('base64url');
}

/** A cookie value that proves its holder knew the scheduler's token until it expires; nothing is kept server-side, so any scheduler sharing the token accepts it. */
export function dashboardCookie(token: string, now = Date.now()): { value: string; maxAgeMs: number } {
  const expires = now + COOKIE_LIFETIME_MS;
  return { value: `${expires}.${mac(token, expires)}`, maxAgeMs: COOKIE_LIFETIME_MS };
}

export function cookieValid(token: string, value: unknown, now = Date.now()): boolean {
  if (typeof value !== 'string') return false;
  const m = /^(\d{13})\.([A-Za-z0-9_-]{43})$/.exec(value);
  if (!m) return false;
  const expires = Number(m[1]);
  return expires > now && tokenMatches(m[2]!, mac(token, expires));
}

/**
 * The API's guard: the bearer token, or for reads the dashboard's cookie
 * (SameSite=Strict and never for writes, so another site cannot act with it).
 */
export function bearerOrDashboardCookie(token: string) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const cookies = (req as Request & { cookies?: Record<string, unknown> }).cookies ?? {};
    if (bearerValid(req, token) || ((req.method === 'GET' || req.method === 'HEAD') && cookieValid(token, cookies[DASHBOARD_COOKIE]))) {
      next();
      return;
    }
    next(new UnauthorizedError());
  };
}
