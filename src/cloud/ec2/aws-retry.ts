import type { z } from 'zod';
import { CloudError, describeZodIssue } from '../../core/errors.js';
import { sleep as realSleep } from '../../util/exec.js';
import { classifyAwsError, cloudError } from './aws-errors.js';

export interface RetryOptions {
  /** Attempts in all, the first included (default 8). */
  attempts: number;
  /** Backoff base and cap, ms (defaults 200 and 20 000): full jitter, as AWS recommends for throttling. */
  baseMs: number;
  capMs: number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
}

export const RETRY_DEFAULTS: RetryOptions = { attempts: 8, baseMs: 200, capMs: 20_000, sleep: (ms) => realSleep(ms), random: Math.random };

/**
 * Runs one AWS call, again after a throttling answer (RequestLimitExceeded
 * and the like) with exponential backoff and full jitter. Any other error,
 * and the last throttling one, comes back as a typed CloudError.
 * The SDK's own retries are off for these clients (maxAttempts 1) so that
 * backoff is decided in one place.
 */
export async function withAwsRetry<T>(what: string, call: () => Promise<T>, opts: Partial<RetryOptions> = {}): Promise<T> {
  const o = { ...RETRY_DEFAULTS, ...opts };
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (classifyAwsError(err) !== 'throttled' || attempt >= o.attempts) throw cloudError(attempt > 1 ? `${what} (after ${attempt} attempts)` : what, err);
      await o.sleep(Math.floor(o.random() * Math.min(o.capMs, o.baseMs * 2 ** (attempt - 1))));
    }
  }
}

/**
 * One AWS call, retried on throttling, its answer parsed with only the fields
 * hubshift reads: a changed shape fails here, by name.
 */
export async function callAws<T>(what: string, schema: z.ZodType<T>, call: () => Promise<unknown>, opts?: Partial<RetryOptions>): Promise<T> {
  const raw = await withAwsRetry(what, call, opts);
  const r = schema.safeParse(raw);
  if (!r.success) throw new CloudError('cloud_failed', 'MalformedResponse', `${what} answered in a shape hubshift does not know: ${describeZodIssue(r.error)}`);
  return r.data;
}

/** Every page of a paginated call: `call(token)` again with each NextToken until there is none. */
export async function* everyPage<T extends { NextToken?: string | undefined }>(
  what: string,
  schema: z.ZodType<T>,
  call: (NextToken: string | undefined) => Promise<unknown>,
  opts?: Partial<RetryOptions>,
): AsyncGenerator<T> {
  let token: string | undefined;
  do {
    const page = await callAws(what, schema, () => call(token), opts);
    yield page;
    token = page.NextToken || undefined;
  } while (token);
}
