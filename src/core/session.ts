import { z } from 'zod';

/** A user name as JupyterHub allows it, restricted to what is safe in paths and interface names. */
export const UserName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'user must be 1-64 of a-z 0-9 . _ - and start with a letter or digit');

/** Session ids are short and hex so that they fit in a Linux interface name (15 chars). */
export const SessionId = z.string().regex(/^s[0-9a-f]{8}$/, 'session id looks like s1a2b3c4d');

export const SessionState = z.enum(['starting', 'running', 'checkpointing', 'checkpointed', 'restoring', 'stopped', 'failed']);
export type SessionState = z.infer<typeof SessionState>;

/** What it takes to start a session. */
export const SessionSpec = z.object({
  user: UserName,
  /** Extra environment for the single-user server (JupyterHub passes its own). */
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
  /**
   * Addresses the session must not take: sessions keep their address when they
   * move, so one that came from this node's pool may run elsewhere now (the
   * scheduler, which knows every session, names them).
   */
  avoidAddresses: z.array(z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, 'is not an IPv4 address')).max(1_000_000).default([]),
});
export type SessionSpec = z.infer<typeof SessionSpec>;

/** Where a session lives on the network: its own namespace address, kept across restore. */
export const SessionNetwork = z.object({
  ip: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/),
  prefixLength: z.number().int().min(8).max(30),
  gateway: z.string(),
  mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
  /** The host side of the session's veth pair, attached to the agent's bridge. */
  hostVeth: z.string().max(15),
  port: z.number().int().min(1).max(65535),
});
export type SessionNetwork = z.infer<typeof SessionNetwork>;

export const Session = z.object({
  id: SessionId,
  user: UserName,
  state: SessionState,
  network: SessionNetwork,
  /** The Jupyter server's token. */
  token: z.string().min(16),
  /** Host-side pid of the session's PID-namespace init (the Jupyter server); null when not running. */
  pid: z.number().int().positive().nullable(),
  home: z.string(),
  /**
   * The session's own files (server log, Jupyter runtime, IPython dir),
   * fixed at start: the processes hold these paths, so a restore on any
   * node puts the files back at the same place.
   */
  filesDir: z.string().optional(),
  env: z.record(z.string(), z.string()),
  createdAt: z.string(),
  updatedAt: z.string(),
  /** The last committed checkpoint of this session, if any. */
  lastCheckpoint: z.string().nullable(),
  /** Why the session is failed, when it is. */
  error: z.string().nullable().default(null),
});
export type Session = z.infer<typeof Session>;

/**
 * Set by JupyterHub in a single-user server's environment: the server serves
 * under this path (/user/NAME/) and accepts the hub's tokens only.
 */
export const HUB_PREFIX_ENV = 'JUPYTERHUB_SERVICE_PREFIX';
export const HUB_TOKEN_ENV = 'JUPYTERHUB_API_TOKEN';

/** Whether the hub started this session: it then runs JupyterHub's single-user server. */
export function isHubSession(s: Pick<Session, 'env'>): boolean {
  return s.env[HUB_TOKEN_ENV] !== undefined;
}

/** The session server's base URL: its own address, under the hub's prefix for a hub session. */
export function sessionUrl(s: Pick<Session, 'network' | 'env'>): string {
  const prefix = isHubSession(s) ? (s.env[HUB_PREFIX_ENV] ?? '/') : '/';
  return `http://${s.network.ip}:${s.network.port}${prefix.startsWith('/') ? prefix : `/${prefix}`}`;
}

/** The view of a session that the API serves and the CLI prints. */
export const SessionView = z.object({
  id: z.string(),
  user: z.string(),
  state: SessionState,
  url: z.string(),
  token: z.string(),
  pid: z.number().nullable(),
  lastCheckpoint: z.string().nullable(),
  error: z.string().nullable(),
  /** After a lazy restore: pages are still arriving (the session runs meanwhile). */
  memoryArriving: z.boolean(),
  /** After it has all arrived: the agent is putting its memory back into huge pages (the session runs meanwhile). */
  memoryCollapsing: z.boolean(),
});
export type SessionView = z.infer<typeof SessionView>;

export function sessionView(s: Session, live: { memoryArriving: boolean; memoryCollapsing: boolean } = { memoryArriving: false, memoryCollapsing: false }): SessionView {
  return {
    id: s.id,
    user: s.user,
    state: s.state,
    url: sessionUrl(s),
    token: s.token,
    pid: s.pid,
    lastCheckpoint: s.lastCheckpoint,
    error: s.error,
    memoryArriving: live.memoryArriving,
    memoryCollapsing: live.memoryCollapsing,
  };
}

/** What a long operation on a session is doing now, for progress lines. */
export const OperationProgress = z.object({
  operation: z.string(),
  step: z.string(),
  doneBytes: z.number().nullable(),
  totalBytes: z.number().nullable(),
  startedAt: z.string(),
});
export type OperationProgress = z.infer<typeof OperationProgress>;
