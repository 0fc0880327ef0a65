import { z } from 'zod';

/**
 * Typed errors. Each carries a stable `code` (match on it, never on the text),
 * a message that says what happened and what to do, and the HTTP status it maps
 * to at the API edge. One error middleware turns them into one response shape.
 */
export type ErrorCode =
  | 'invalid_input'
  | 'unauthorized'
  | 'not_found'
  | 'conflict'
  | 'integrity'
  | 'criu_failed'
  | 'criu_timeout'
  | 'criu_unavailable'
  | 'sandbox_failed'
  | 'store_failed'
  | 'timeout'
  | 'upstream_failed'
  | 'unreachable'
  | 'stale_fence'
  | 'agent_stopping'
  | 'cloud_capacity'
  | 'cloud_denied'
  | 'cloud_failed';

export class HubshiftError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubshiftError';
    this.code = code;
    this.status = status;
  }
}

/** Bad input from a caller: names the field and what was wrong. */
export class InputError extends HubshiftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_input', 400, message, options);
    this.name = 'InputError';
  }
}

export class UnauthorizedError extends HubshiftError {
  constructor(message = 'missing or wrong bearer token (pass the token from --token-file)') {
    super('unauthorized', 401, message);
    this.name = 'UnauthorizedError';
  }
}

export class NotFoundError extends HubshiftError {
  constructor(message: string) {
    super('not_found', 404, message);
    this.name = 'NotFoundError';
  }
}

/** The request conflicts with the current state (a session already running, an operation in flight). */
export class ConflictError extends HubshiftError {
  constructor(message: string) {
    super('conflict', 409, message);
    this.name = 'ConflictError';
  }
}

/** A checkpoint failed verification: a blob is missing, truncated or altered, or the manifest is absent. */
export class IntegrityError extends HubshiftError {
  constructor(message: string) {
    super('integrity', 422, message);
    this.name = 'IntegrityError';
  }
}

/** A blob the checkpoint's manifest names is not in the store. */
export class MissingBlobError extends IntegrityError {
  constructor(id: string, blob: string, location: string) {
    super(`checkpoint ${id} is missing its blob ${blob} in ${location}`);
    this.name = 'MissingBlobError';
  }
}

/** Blobs of a checkpoint but no manifest: a checkpoint interrupted before its commit, or one being deleted (the manifest goes first). */
export class UncommittedCheckpointError extends IntegrityError {
  constructor(id: string, location: string) {
    super(`checkpoint ${id} has no manifest in ${location}: it was never committed (an interrupted checkpoint); take a new one`);
    this.name = 'UncommittedCheckpointError';
  }
}

/** criu ran and failed; `reason` is the parsed cause from its log, `logPath` where the full log is kept. */
export class CriuError extends HubshiftError {
  readonly reason: string;
  readonly logPath: string | undefined;
  constructor(code: 'criu_failed' | 'criu_timeout' | 'criu_unavailable', message: string, reason: string, logPath?: string) {
    super(code, code === 'criu_unavailable' ? 503 : 500, message);
    this.name = 'CriuError';
    this.reason = reason;
    this.logPath = logPath;
  }
}

export class SandboxError extends HubshiftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('sandbox_failed', 500, message, options);
    this.name = 'SandboxError';
  }
}

export class StoreError extends HubshiftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('store_failed', 502, message, options);
    this.name = 'StoreError';
  }
}

export class TimeoutError extends HubshiftError {
  constructor(message: string) {
    super('timeout', 504, message);
    this.name = 'TimeoutError';
  }
}

/** An HTTP peer (agent, Jupyter server) answered with an error; carries its code when it sent one. */
export class UpstreamError extends HubshiftError {
  readonly upstreamCode: string | undefined;
  constructor(message: string, status = 502, upstreamCode?: string) {
    super('upstream_failed', status, message);
    this.name = 'UpstreamError';
    this.upstreamCode = upstreamCode;
  }
}

/** An HTTP peer did not answer at all (down, unreachable, timed out): worth retrying. */
export class UnreachableError extends HubshiftError {
  constructor(message: string) {
    super('unreachable', 503, message);
    this.name = 'UnreachableError';
  }
}

/**
 * A caller acted on a session with a fencing token older than one already
 * seen: another worker has taken the session's lock since.
 */
export class StaleFenceError extends HubshiftError {
  constructor(message: string) {
    super('stale_fence', 409, message);
    this.name = 'StaleFenceError';
  }
}

/**
 * The cloud said no. `awsCode` is AWS's own error code
 * (InsufficientInstanceCapacity, UnauthorizedOperation, ...), kept for logs and matching.
 */
export class CloudError extends HubshiftError {
  readonly awsCode: string;
  constructor(code: 'cloud_capacity' | 'cloud_denied' | 'cloud_failed', awsCode: string, message: string, options?: { cause?: unknown }) {
    super(code, code === 'cloud_denied' ? 403 : 503, message, options);
    this.name = 'CloudError';
    this.awsCode = awsCode;
  }
}

/** The agent is stopping: it starts no operation on a session, as its processes and records may be going away. */
export class AgentStoppingError extends HubshiftError {
  constructor(message: string) {
    super('agent_stopping', 503, message);
    this.name = 'AgentStoppingError';
  }
}

/** The one shape every API error is answered with. */
export const ErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
export type ErrorBody = z.infer<typeof ErrorBody>;

/** The first problem zod found, as "field.path: message" (`root` names the whole value when the path is empty). */
export function describeZodIssue(err: z.ZodError, root = '(root)'): string {
  const i = err.issues[0];
  return `${i?.path.join('.') || root}: ${i?.message}`;
}

/**
 * The top-level fields of `raw` that an object schema does not name: what a
 * stripping parse drops, to be told rather than lost in silence. At most
 * `limit` of them, each cut to 64 characters: they are logged and answered.
 */
export function fieldsUnknownTo(schema: z.ZodObject, raw: unknown, limit = 20): string[] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return [];
  return Object.keys(raw)
    .filter((k) => !Object.hasOwn(schema.shape, k))
    .slice(0, limit)
    .map((k) => k.slice(0, 64));
}

/**
 * `fieldsUnknownTo` for each object of a list, named `list[].field`, each
 * name once (the same limits).
 */
export function itemFieldsUnknownTo(schema: z.ZodObject, raw: unknown, list: string, limit = 20): string[] {
  if (!Array.isArray(raw)) return [];
  const names = new Set<string>();
  for (const item of raw) {
    for (const k of fieldsUnknownTo(schema, item, limit)) names.add(`${list}[].${k}`.slice(0, 64));
    if (names.size >= limit) break;
  }
  return [...names].slice(0, limit);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A failed fetch's message with what actually failed: Node's fetch says only
 * "fetch failed" and keeps the socket's error (a refused connection, a reset,
 * a closed keep-alive socket) as its cause.
 */
export function fetchFailure(err: unknown): string {
  const cause = err instanceof Error ? (err.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  if (!cause || typeof cause !== 'object') return errorMessage(err);
  const what = [typeof cause.code === 'string' ? cause.code : null, typeof cause.message === 'string' ? cause.message : null].filter(Boolean).join(': ');
  return what ? `${errorMessage(err)} (${what})` : errorMessage(err);
}
