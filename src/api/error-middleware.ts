import type { NextFunction, Request, Response } from 'express';
import { ZodError } from 'zod';
import { HubshiftError, describeZodIssue, errorMessage, type ErrorBody } from '../core/errors.js';

/** One response shape for every error: {"error":{"code","message"}} with the error's status. */
export function errorMiddleware(log?: { error: (o: object, m: string) => void }) {
  return (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    let status = 500;
    let body: ErrorBody;
    if (err instanceof HubshiftError) {
      status = err.status;
      body = { error: { code: err.code, message: err.message } };
    } else if (err instanceof ZodError) {
      status = 400;
      body = { error: { code: 'invalid_input', message: `invalid request at ${describeZodIssue(err, '(body)')}` } };
    } else if (err instanceof SyntaxError && 'body' in (err as object)) {
      status = 400;
      body = { error: { code: 'invalid_input', message: 'request body is not valid JSON' } };
    } else {
      body = { error: { code: 'internal', message: errorMessage(err) } };
    }
    if (status >= 500) log?.error({ err: errorMessage(err) }, 'request failed');
    res.status(status).json(body);
  };
}
