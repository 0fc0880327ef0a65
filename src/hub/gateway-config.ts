/*
 * The session gateway's settings and their defaults, apart from the gateway
 * itself: the CLI shows them in --help without loading it.
 */

export interface GatewayConfig {
  host: string;
  /** 0 picks a free one. */
  port: number;
  /** How long a request or a websocket waits for its session to move, wake or answer again. */
  holdTimeoutMs: number;
  /** Requests and websockets waiting at once; past it, new ones are refused with 503 at once. */
  maxHeld: number;
  /** What a browser's websocket may send while its session is away, before the gateway closes it. */
  wsBufferBytes: number;
  /** How often a waiting request asks where its session is. */
  pollIntervalMs: number;
  /** How long a looked-up running session is trusted before it is asked again. */
  cacheMs: number;
}

export const GATEWAY_DEFAULTS = {
  host: '127.0.0.1',
  port: 7303,
  holdTimeoutMs: 120_000,
  maxHeld: 1000,
  wsBufferBytes: 16 * 2 ** 20,
  pollIntervalMs: 100,
  cacheMs: 1_000,
} as const satisfies GatewayConfig;

/** How often the activity the gateway sees is reported to JupyterHub, by default. */
export const HUB_ACTIVITY_DEFAULT_MS = 60_000;
