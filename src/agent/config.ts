import type { Compression } from '../core/checkpoint.js';
import type { BridgeConfig } from './network.js';

export interface AgentConfig {
  /** Address the HTTP API binds to. Default 127.0.0.1; use 0.0.0.0 to serve a scheduler on another machine. */
  host: string;
  /** Port of the HTTP API; 0 picks a free one. */
  port: number;
  /** Sessions' records, logs, users' homes. */
  dataDir: string;
  /** Bearer token every endpoint but /healthz requires. */
  token: string;
  /** Checkpoint store: a directory (default DATA_DIR/store) or s3://bucket/prefix. */
  storeUrl: string;
  /** An S3-compatible endpoint for the store (tests, MinIO); unset for AWS. */
  s3Endpoint?: string;
  /** Where criu writes images before they are stored. Default DATA_DIR/work (same filesystem as a directory store, so blobs are linked, not copied). */
  workDir: string;
  bridge: BridgeConfig;
  /** The session server's command; {port} and {home} are filled in. */
  sessionCommand: string[];
  /** Port the session server listens on inside its namespace. Default 8888. */
  sessionPort: number;
  /** Default none: compression buys little on random memory and costs time. */
  compression: Compression;
  /**
   * Restore with criu's lazy pages from the verified local image when the
   * kernel has userfaultfd: the session answers before all its memory is
   * copied in. Default true; a lazy restore that fails falls back to a plain one.
   */
  lazyRestore: boolean;
  /** An extra CRIU action script, run at every stage after hubshift's own. */
  criuActionScript?: string;
  /** How long a session server may take to answer after start or restore. Default 60 s. */
  startTimeoutMs: number;
  /** Default 300 s for dump, 120 s for restore. */
  dumpTimeoutMs: number;
  restoreTimeoutMs: number;
}
