import type { Compression } from '../core/checkpoint.js';
import { ASSUMED_NETWORK_GBPS } from '../core/moves-at-once.js';
import { join } from 'node:path';
import type { BridgeConfig } from './network.js';
import type { SchedulerLinkConfig } from './scheduler-link.js';
import { DEFAULT_SESSION_COMMAND, HUB_SESSION_COMMAND } from './sandbox.js';
import { DEFAULT_CONNTRACK_BUCKETS } from '../criu/conntrack-table.js';
import type { CriuLogLevel, FileValidation } from '../criu/driver.js';
import { THP_ENABLED_FILE } from '../criu/transparent-huge-pages.js';

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
  /** Encrypt S3 objects with SSE-KMS under this key (id, ARN, alias/NAME, or aws/s3). */
  s3KmsKey?: string;
  /** This node's network bandwidth, Gbit/s: how many S3 parts move at once. Default 10. */
  networkGbps: number;
  /** Checkpoints kept per session (older ones are deleted after each new one); 0 keeps all. Default 3. */
  keepCheckpoints: number;
  /** Days criu's logs (DATA_DIR/logs) are kept; 0 keeps them all. Default 14. */
  logDays: number;
  /** Where criu writes images before they are stored. Default DATA_DIR/work (same filesystem as a directory store, so blobs are linked, not copied). */
  workDir: string;
  bridge: BridgeConfig;
  /** The session server's command; {port} and {home} are filled in. */
  sessionCommand: string[];
  /** The same for sessions JupyterHub starts (their environment has JUPYTERHUB_API_TOKEN). */
  hubSessionCommand: string[];
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
  /**
   * A session moved in is restored stopped and runs once its source commits;
   * without a commit within this time it is killed, so the source may resume
   * it safely. Default 30 s.
   */
  incomingTimeoutMs: number;
  /**
   * A move whose connection stalls this long (a cut link) is given up and
   * rolled back; a post-copy transfer that brings no page for this long
   * after its commit too (the session then runs on the source again). Default 30 s.
   */
  moveIdleTimeoutMs: number;
  /**
   * Post-copy: at most these bytes of the kernels' memory sent with the
   * images (their hot pages where the session has that record, else their
   * smallest mappings: their interpreters' working memory), so that the
   * first execute on the target does not fault them in one by one over the
   * network. The server's memory always goes. Default 64 MiB; 0: none.
   */
  postCopyEagerBytes: number;
  /**
   * Memory warmed for each restore and move in, and freed just before criu restore, for the fill of the server's
   * memory to land on (landing-memory.ts): about a session server's size (75-100 MB here). 0: none.
   */
  landingBytes: number;
  /**
   * Post-copy: copy that eager memory while the session still runs and send
   * it ahead (memory-precopy.ts), so that after the freeze only the pages
   * that changed since go. Default on.
   */
  postCopyPrecopy: boolean;
  /**
   * Start commands (criu restore, ip, nft, ...) from a small helper process
   * instead of forking this one (util/spawn-helper.ts): a fork of the agent
   * took 6-9 ms and made every page it wrote next fault once; 40-80 ms of a
   * 1 GiB post-copy move's downtime here (runs alternated). Default true.
   */
  spawnHelper: boolean;
  /**
   * Hold criu, the commands run beside it and the restore's hasher in
   * memory, locked, while the agent runs (resident-tools.ts): read from disk
   * (a node whose memory its sessions filled, a dropped page cache), criu
   * took 16-25 ms instead of 11-17 to start inside a checkpoint. About 17 MB.
   * Default true.
   */
  residentTools: boolean;
  /**
   * Keep criu started ahead of need (two), waiting for their arguments
   * (waiting-criu.ts; hubshift's build of criu only): a dump or restore then
   * does not wait for criu to start. Default true.
   */
  waitingCriu: boolean;
  /**
   * Sessions' glibc maps large allocations in transparent huge pages
   * (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, huge-page-collapse.ts), and after
   * a lazy restore the agent puts that memory back into huge pages: criu
   * dumps a GiB in huge pages 70 ms faster. Default on.
   */
  sessionHugePages: boolean;
  /** The kernel's transparent huge page setting, read before each lazy restore (see transparent-huge-pages.ts). */
  transparentHugePagesFile: string;
  /**
   * Buckets the host's connection-tracking table is shrunk to at start when it
   * is larger and nearly unused (criu walks the whole table twice in every
   * dump; see criu/conntrack-table.ts). 0: leave the table alone.
   */
  conntrackBuckets: number;
  /**
   * How criu checks that a restore maps the very files the dump saw. Default
   * `filesize` (size and mode): `buildid` also reads every mapped library's
   * ELF build-id at dump and restore, a disk read each where its first page
   * is not cached (20-35 ms of a checkpoint here), and catches a library
   * replaced by a different build of the same size.
   */
  fileValidation: FileValidation;
  /**
   * How much criu logs of every dump and restore (CriuLogLevel). Default 2,
   * errors and warnings: every failure's explanation is still there, and the
   * 20-45 ms criu spends at 4 writing a line per step of a 1 GiB session's
   * dump, and again in its restore, stay out of a move's frozen window.
   */
  criuLogLevel: CriuLogLevel;
  /** Register with a scheduler and push metrics to it; unset: the agent runs alone. */
  scheduler?: SchedulerLinkConfig;
}

/** Every default of an agent's configuration, in one place (the CLI's option defaults read them too). */
export const AGENT_DEFAULTS = {
  host: '127.0.0.1',
  port: 7301,
  bridge: { name: 'hsbr0', subnet: '10.213.0.0/24' },
  sessionCommand: DEFAULT_SESSION_COMMAND,
  hubSessionCommand: HUB_SESSION_COMMAND,
  sessionPort: 8888,
  compression: 'none',
  lazyRestore: true,
  startTimeoutMs: 60_000,
  dumpTimeoutMs: 300_000,
  restoreTimeoutMs: 120_000,
  incomingTimeoutMs: 30_000,
  moveIdleTimeoutMs: 30_000,
  postCopyEagerBytes: 64 << 20,
  landingBytes: 128 << 20,
  postCopyPrecopy: true,
  sessionHugePages: true,
  spawnHelper: true,
  residentTools: true,
  waitingCriu: true,
  transparentHugePagesFile: THP_ENABLED_FILE,
  conntrackBuckets: DEFAULT_CONNTRACK_BUCKETS,
  fileValidation: 'filesize',
  criuLogLevel: 2,
  networkGbps: ASSUMED_NETWORK_GBPS,
  keepCheckpoints: 3,
  logDays: 14,
} as const satisfies Partial<AgentConfig>;

/**
 * A full configuration from the data directory, the token and whatever the
 * caller sets; the store and work directory default to DATA_DIR/store and
 * DATA_DIR/work. Fields given as undefined keep their default.
 */
export function agentConfig(given: Pick<AgentConfig, 'dataDir' | 'token'> & Partial<AgentConfig>): AgentConfig {
  const set = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as typeof given;
  return {
    ...AGENT_DEFAULTS,
    sessionCommand: [...AGENT_DEFAULTS.sessionCommand],
    hubSessionCommand: [...AGENT_DEFAULTS.hubSessionCommand],
    bridge: { ...AGENT_DEFAULTS.bridge },
    storeUrl: join(given.dataDir, 'store'),
    workDir: join(given.dataDir, 'work'),
    ...set,
  };
}
