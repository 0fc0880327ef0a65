import { startAhead, type Detached, type RunOptions, type RunResult, type StartedAhead } from '../util/exec.js';
import { criuCommand, type CriuBinary } from './binary.js';

/**
 * What `criu --args-from-stdin` (hubshift's build, args-from-stdin.patch)
 * reads once it has work: its arguments, an empty entry, then `NAME=VALUE`
 * entries for its environment and `@N:PATH` entries, PATH opened as its
 * descriptor N (3, 4, ... in order, as run()'s extraFds). Each entry
 * NUL-terminated. Undefined where an entry cannot be written so (an empty
 * argument would end the arguments; a NUL would split an entry).
 */
export function argsFromStdinInput(args: readonly string[], env: Record<string, string> = {}, fdPaths: readonly string[] = []): string | undefined {
  const settings = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...fdPaths.map((p, i) => `@${3 + i}:${p}`)];
  if (args.some((a) => a === '') || [...args, ...settings].some((e) => e.includes('\0'))) return undefined;
  return [...args, '', ...settings].map((e) => `${e}\0`).join('');
}

/**
 * Criu processes kept started ahead of need (two by default: a post-copy
 * move's target takes one for its lazy-pages daemon and one for the restore
 * right after it), so that a dump, a restore or a daemon does not wait for
 * criu to start: the agent's fork of the spawn helper, its exec, the loader
 * mapping and relocating criu's libraries, criu's start to its log (11-17
 * ms, median 13, of every dump here with the binary held in memory). A
 * waiting criu has done all that and blocks reading its stdin (3 MB, most
 * of it criu's own pages, shared). It inherits the agent's environment when
 * it starts; a run adds its own. A taken criu is replaced half a second
 * after its run ends (a daemon's: after it starts), not while it runs (the
 * start's fork and exec would take CPU from it); a run that finds none
 * ready starts criu as before. Only hubshift's build has the option
 * (CriuBinary.argsFromStdin); with another criu this does nothing.
 */
export class WaitingCriu {
  private readonly waiting: StartedAhead[] = [];
  private starting = 0;
  /** Set by warm(), cleared by close(): whether criu processes are kept waiting. */
  private active = false;

  constructor(
    private readonly bin: Pick<CriuBinary, 'argv' | 'argsFromStdin'>,
    /** How many wait at most. */
    readonly keep = 2,
  ) {}

  /** The waiting criu processes' pids, the next to be taken first. */
  get waitingPids(): number[] {
    return this.waiting.filter((c) => !c.ended).map((c) => c.pid);
  }

  /** Starts criu processes until `keep` wait, and keeps that many from then on (until close()). */
  warm(): void {
    if (this.bin.argsFromStdin !== true) return;
    this.active = true;
    const { cmd, args } = criuCommand(this.bin, ['--args-from-stdin']);
    for (let n = this.waitingPids.length + this.starting; n < this.keep; n++) {
      this.starting++;
      startAhead(cmd, args).then(
        (c) => {
          this.starting--;
          if (this.active) this.waiting.push(c);
          else c.cancel();
        },
        // Not started (the binary gone, no processes left): runs start criu themselves, as without this.
        () => this.starting--,
      );
    }
  }

  /**
   * Runs criu with `args` (after `criu`), `env` added to the agent's and
   * `fdPaths` as its descriptors 3, 4, ... in a waiting criu; undefined
   * where none is ready (the caller then starts criu itself). Settles as
   * run() does for a command it started.
   */
  run(args: readonly string[], extra: CriuRunExtra, opts: Pick<RunOptions, 'timeoutMs' | 'signal' | 'onSpawn'>): Promise<RunResult> | undefined {
    const c = this.take(args, extra);
    if (!c) return undefined;
    const done = c.criu.run(c.input, opts);
    void done
      .catch(() => undefined)
      .then(() => this.replaceSoon());
    return done;
  }

  /** Starts a criu daemon (lazy-pages) with `args` in a waiting criu, left running as startDetached leaves one; undefined where none is ready. */
  launch(args: readonly string[], extra: CriuRunExtra = {}): Pick<Detached, 'pid' | 'exited'> | undefined {
    const c = this.take(args, extra);
    if (!c) return undefined;
    const d = c.criu.launch(c.input);
    this.replaceSoon();
    return d;
  }

  /** Kills the waiting criu processes; none is started again unless warm() is called. */
  close(): void {
    this.active = false;
    for (const c of this.waiting.splice(0)) c.cancel();
  }

  private take(args: readonly string[], extra: CriuRunExtra): { criu: StartedAhead; input: string } | undefined {
    const input = argsFromStdinInput(args, extra.env, extra.fdPaths);
    if (input === undefined) return undefined;
    let criu: StartedAhead | undefined;
    while (!criu && this.waiting.length > 0) {
      const c = this.waiting.shift() as StartedAhead;
      if (!c.ended) criu = c;
    }
    if (!criu) this.replaceSoon();
    return criu && { criu, input };
  }

  private replaceSoon(): void {
    setTimeout(() => this.active && this.warm(), 500).unref();
  }
}

/** What a run adds to the waiting criu: its environment and its inherited descriptors (as paths). */
export interface CriuRunExtra {
  env?: Record<string, string>;
  fdPaths?: readonly string[];
}
