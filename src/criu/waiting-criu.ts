import { startAhead, type RunOptions, type RunResult, type StartedAhead } from '../util/exec.js';
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
 * One criu kept started ahead of need, so that a dump or a restore does not
 * wait for criu to start: the agent's fork of the spawn helper, its exec,
 * the loader mapping and relocating criu's libraries, criu's start to its
 * log (11-17 ms, median 13, of every dump here with the binary held in
 * memory). The waiting criu has done all that and blocks reading its stdin.
 * It inherits the agent's environment when it starts; a run adds its own.
 * A taken criu is replaced half a second after its run ends, not while it
 * runs (the start's fork and exec would take CPU from the dump); a run that
 * finds none ready starts criu as before. Only hubshift's build has the
 * option (CriuBinary.argsFromStdin); with another criu this does nothing.
 */
export class WaitingCriu {
  private waiting: StartedAhead | undefined;
  private starting = false;
  /** Set by warm(), cleared by close(): whether a criu is kept waiting. */
  private active = false;

  constructor(private readonly bin: Pick<CriuBinary, 'argv' | 'argsFromStdin'>) {}

  /** The waiting criu's pid, if one waits. */
  get waitingPid(): number | undefined {
    return this.waiting && !this.waiting.ended ? this.waiting.pid : undefined;
  }

  /** Starts a criu to wait, and keeps one waiting from then on (until close()). */
  warm(): void {
    if (this.bin.argsFromStdin !== true) return;
    this.active = true;
    if (this.starting || (this.waiting && !this.waiting.ended)) return;
    this.starting = true;
    const { cmd, args } = criuCommand(this.bin, ['--args-from-stdin']);
    startAhead(cmd, args).then(
      (c) => {
        this.starting = false;
        if (this.active) this.waiting = c;
        else c.cancel();
      },
      // Not started (the binary gone, no processes left): runs start criu themselves, as without this.
      () => (this.starting = false),
    );
  }

  /**
   * Runs criu with `args` (after `criu`), `env` added to the agent's and
   * `fdPaths` as its descriptors 3, 4, ... in the waiting criu; undefined
   * where none is ready (the caller then starts criu itself). Settles as
   * run() does for a command it started.
   */
  run(args: readonly string[], extra: { env?: Record<string, string>; fdPaths?: readonly string[] }, opts: Pick<RunOptions, 'timeoutMs' | 'signal' | 'onSpawn'>): Promise<RunResult> | undefined {
    const input = argsFromStdinInput(args, extra.env, extra.fdPaths);
    const c = this.waiting;
    if (input === undefined || !c) return undefined;
    this.waiting = undefined;
    if (c.ended) {
      this.warm();
      return undefined;
    }
    const done = c.run(input, opts);
    void done
      .catch(() => undefined)
      .then(() => setTimeout(() => this.active && this.warm(), 500).unref());
    return done;
  }

  /** Kills the waiting criu; none is started again unless warm() is called. */
  close(): void {
    this.active = false;
    this.waiting?.cancel();
    this.waiting = undefined;
  }
}
