import { CloudError, errorMessage } from '../../core/errors.js';

/** What to do about an error AWS returned. */
export type AwsErrorKind =
  /** Slow down and try the same call again (RequestLimitExceeded and other throttling, 5xx). */
  | 'throttled'
  /** This type, zone or market has no room now: try the next candidate. */
  | 'capacity'
  /** The role may not do this: retrying cannot help, the operator must act. */
  | 'denied'
  /** Anything else: the call is wrong or the request cannot be met. */
  | 'failed';

const THROTTLED = new Set(['RequestLimitExceeded', 'Throttling', 'ThrottlingException', 'RequestThrottled', 'ServiceUnavailable', 'Unavailable', 'InternalError', 'InternalFailure']);
const CAPACITY = new Set([
  'InsufficientInstanceCapacity',
  'InsufficientHostCapacity',
  'InsufficientReservedInstanceCapacity',
  'SpotMaxPriceTooLow',
  'MaxSpotInstanceCountExceeded',
  'InstanceLimitExceeded',
  'VcpuLimitExceeded',
  'Unsupported',
  'UnfulfillableCapacity',
]);
const DENIED = new Set(['UnauthorizedOperation', 'AuthFailure', 'AccessDenied', 'AccessDeniedException', 'OptInRequired', 'Blocked']);

/** AWS's code of an SDK error (the exception's name), or of an error entry in a CreateFleet answer. */
export function awsCode(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const e = err as { name?: unknown; Code?: unknown; code?: unknown };
    for (const c of [e.Code, e.code, e.name]) if (typeof c === 'string' && c !== 'Error') return c;
  }
  return 'Unknown';
}

export function classifyAwsCode(code: string, httpStatus?: number): AwsErrorKind {
  if (THROTTLED.has(code)) return 'throttled';
  // EC2 answers InsufficientInstanceCapacity with HTTP 500: the code decides before the status does.
  if (CAPACITY.has(code)) return 'capacity';
  if (DENIED.has(code)) return 'denied';
  return httpStatus !== undefined && httpStatus >= 500 ? 'throttled' : 'failed';
}

export function classifyAwsError(err: unknown): AwsErrorKind {
  return classifyAwsCode(awsCode(err), (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode);
}

const HINTS: Record<string, string> = {
  InsufficientInstanceCapacity: 'AWS has no capacity for it there now; another type or zone may',
  SpotMaxPriceTooLow: 'the spot price is above the maximum price set; raise it or let the launch fall back to on-demand',
  MaxSpotInstanceCountExceeded: 'the account reached its spot instance quota; request an increase (Service Quotas) or use on-demand',
  VcpuLimitExceeded: "the account's vCPU quota for this family is used up; request an increase (Service Quotas)",
  UnauthorizedOperation: "the role lacks this permission; compare it with infra/terraform/iam.tf (decode the message with 'aws sts decode-authorization-message')",
  RequestLimitExceeded: 'EC2 throttled the account; calls are retried with backoff',
};

/** A typed error for AWS's `code` and message while doing `what` (an exception's, or an error entry of a CreateFleet answer). */
export function cloudErrorOf(what: string, code: string, message: string, opts: { httpStatus?: number; cause?: unknown } = {}): CloudError {
  const kind = classifyAwsCode(code, opts.httpStatus);
  const hint = HINTS[code];
  const typed = kind === 'capacity' ? 'cloud_capacity' : kind === 'denied' ? 'cloud_denied' : 'cloud_failed';
  return new CloudError(typed, code, `${what} failed: ${code}: ${message}${hint ? ` (${hint})` : ''}`, { cause: opts.cause });
}

/** A typed error for what AWS raised while doing `what`. */
export function cloudError(what: string, err: unknown): CloudError {
  if (err instanceof CloudError) return err;
  const httpStatus = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return cloudErrorOf(what, awsCode(err), errorMessage(err), { httpStatus, cause: err });
}
