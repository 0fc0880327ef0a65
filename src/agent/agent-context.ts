import type { WaitingCriu } from '../criu/waiting-criu.js';
import type { ResidentFiles } from '../util/resident-files.js';
import type { LandingMemory } from './landing-memory.js';
import type { PreparedAnnounce } from './network.js';
import type { Logger } from 'pino';
import type { MoveManifest, PageServerAt } from '../core/checkpoint.js';
import type { CriuBinary } from '../criu/binary.js';
import type { RestoredLazy } from './restore-service.js';
import type { ImageStore } from '../images/image-store.js';
import type { PageCaptureHelpers } from '../images/page-capture.js';
import type { HashingHelpers } from '../images/helper-hashing.js';
import type { AgentConfig } from './config.js';
import type { Fences } from './fences.js';
import type { HugePageCollapses } from './huge-page-collapse.js';
import type { LentAddresses } from './lent-addresses.js';
import type { LazyTransfers } from './lazy-transfers.js';
import type { PushedPages } from './pushed-pages.js';
import type { SessionRegistry } from './session-registry.js';

/** What the agent's services share; built once by createAgent. */
export interface AgentContext {
  config: AgentConfig;
  registry: SessionRegistry;
  /** Addresses of sessions moved from here to other agents, still held there. */
  lent: LentAddresses;
  criu: CriuBinary;
  store: ImageStore;
  /** hubshift's CRIU action script (see criu-hook.ts). */
  criuHook: string;
  log: Logger;
  /** Lazy restores whose pages are still arriving; dumps wait for them. */
  lazy: LazyTransfers;
  /** Sessions whose memory is being put back into huge pages after a lazy restore; dumps stop them. */
  hugePages: HugePageCollapses;
  /** Highest fencing token seen per session: stale workers are refused. */
  fences: Fences;
  /** Sessions moved in, restored stopped, waiting for their source's commit. */
  incoming: Map<string, IncomingMove>;
  /** Page servers receiving the memory of sessions being moved in stop-and-copy, before their move stream. */
  pushedPages: Map<string, PushedPages>;
  /** A checkpoint's page capture helper, started ahead of need. */
  captureHelpers: PageCaptureHelpers;
  /** Criu started ahead of need, for the next dumps, restores and lazy-pages daemons (waiting-criu.ts). */
  waitingCriu: WaitingCriu;
  /** Memory warmed for each restore's fill (landing-memory.ts). */
  landing: LandingMemory;
  /** Checkpoints being fetched from the store for a restore here: retention leaves them alone meanwhile. */
  reading: Set<string>;
  /** A restore's verification helpers, started ahead of need. */
  hashingHelpers: HashingHelpers;
  /**
   * criu and the commands around it, held in memory (resident-tools.ts):
   * resolves once they are (some 0.15-0.6 s after the agent starts, which does
   * not wait for it); undefined when off or when it failed.
   */
  residentTools: Promise<ResidentFiles | undefined>;
  /**
   * Aborted when this agent stops (close) or its node is torn down
   * (stopEverySession): background watches of moves end without acting, as
   * if the agent had died; a next agent takes over from the records on disk.
   */
  stopping: AbortController;
  /**
   * Aborted only when the node is torn down (stopEverySession), its sessions
   * killed: a criu dump under way is killed too. Left running, one held up
   * (by an operator's script, by a tree dying under it) would outlive a
   * test's or a bench's agent, and the timeout the agent enforces.
   */
  teardown: AbortController;
}

export interface IncomingMove {
  work: string;
  /** What the source sent: enough to commit the verified image to the store as a checkpoint. */
  manifest: MoveManifest;
  /** Forgets the stopped copy when no commit comes in time. */
  timer: NodeJS.Timeout;
  /**
   * A detached process that kills the stopped copy and its namespace when no
   * commit comes in time, even if this agent has died meanwhile.
   */
  guardPid: number | null;
  /**
   * Post-copy: the memory still arriving from the source's criu. `complete`
   * once the daemon has brought it all (the source's criu then ended its copy).
   */
  postCopy?: { lazy: RestoredLazy; pageServer: PageServerAt; complete: boolean };
  /** The restore's lazy-pages daemon, held stopped with the copy until the commit (RestoredLazy.resume); null when it restored plainly. */
  lazy: RestoredLazy | null;
  /** The session's announcement, ready for its commit (prepareAnnounce); cancelled when the move does not happen. */
  announcer?: PreparedAnnounce;
}
