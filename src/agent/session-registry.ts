import { rmdirSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentStoppingError, ConflictError, NotFoundError, SessionId } from '../core/index.js';
import { Session, type OperationProgress } from '../core/session.js';
import { removeJsonRecord, writeJsonRecord } from '../util/fs.js';

/**
 * The agent's sessions, one JSON file each under DATA_DIR/sessions/<id>/, so
 * an agent that restarts knows every session it ran (they outlive it). Holds
 * one operation per session at a time within this agent.
 */
export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();
  private readonly busy = new Map<string, OperationProgress>();
  /** Called once no operation is under way (idle). */
  private readonly onIdle = new Set<() => void>();

  constructor(
    private readonly dataDir: string,
    /**
     * Aborted when the agent stops or its node is torn down: no operation starts after it. One that started after a
     * teardown had stopped the sessions would act on a session being killed, and could outlive a test's or a
     * bench's agent (and the timeouts it enforces).
     */
    private readonly stopping?: AbortSignal,
  ) {}

  private file(id: string): string {
    return join(this.dataDir, 'sessions', id, 'session.json');
  }

  async load(): Promise<Session[]> {
    const dir = join(this.dataDir, 'sessions');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const id of await readdir(dir)) {
      if (!SessionId.safeParse(id).success) continue;
      try {
        const s = Session.parse(JSON.parse(await readFile(this.file(id), 'utf8')));
        this.sessions.set(s.id, s);
      } catch {
        /* a directory without a valid record: a session that never started */
      }
    }
    return this.list();
  }

  list(): Session[] {
    return [...this.sessions.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  find(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  get(id: string): Session {
    const s = this.sessions.get(id);
    if (!s) throw new NotFoundError(`no session ${id} on this agent (hubshift session ls lists them)`);
    return s;
  }

  /** Records a session's new state durably (writeJsonRecord: a temp file, then renamed). */
  async put(s: Session): Promise<Session> {
    const next = Session.parse({ ...s, updatedAt: new Date().toISOString() });
    await writeJsonRecord(this.file(s.id), next, 2);
    this.sessions.set(s.id, next);
    return next;
  }

  async update(id: string, patch: Partial<Session>): Promise<Session> {
    return this.put({ ...this.get(id), ...patch });
  }

  /** Forgets a session: its record goes (the directory too, once empty); its files are the caller's to remove. */
  async remove(id: string): Promise<void> {
    this.sessions.delete(id);
    await removeJsonRecord(this.file(id));
    try {
      rmdirSync(join(this.dataDir, 'sessions', id));
    } catch {
      /* not empty: the session's files are still there, the caller's to remove */
    }
  }

  /**
   * Runs `fn` as the only operation on the session; a second one at once is refused, and so is any once the agent is
   * stopping, unless `finishesHandOver`: the start of a moved-in copy that is already the session's only one.
   */
  async exclusive<T>(id: string, what: string, fn: () => Promise<T>, opts: { finishesHandOver?: boolean } = {}): Promise<T> {
    if (!opts.finishesHandOver) this.refuseWhenStopping(what, id);
    const current = this.busy.get(id);
    if (current) throw new ConflictError(`session ${id} is busy with ${current.operation}; try again when it is done`);
    this.busy.set(id, { operation: what, step: 'starting', doneBytes: null, totalBytes: null, startedAt: new Date().toISOString() });
    try {
      return await fn();
    } finally {
      this.busy.delete(id);
      if (this.underWay === 0) for (const done of this.onIdle) done();
    }
  }

  /** Throws once the agent is stopping: for an operation that must not begin (nor leave a record) then. */
  refuseWhenStopping(what: string, id: string): void {
    if (this.stopping?.aborted) throw new AgentStoppingError(`this agent is stopping and begins nothing new: the ${what} of session ${id} was refused; ask again once it has restarted, or ask another agent`);
  }

  /** How many operations are under way here. */
  get underWay(): number {
    return this.busy.size;
  }

  /**
   * Resolves true once no operation is under way here, or false after
   * `timeoutMs`: an agent torn down under a running operation (its answer
   * cut) lets it end before its files are removed, lest the operation
   * write them again.
   */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.underWay === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const finish = (result: boolean): void => {
        clearTimeout(timer);
        this.onIdle.delete(done);
        resolve(result);
      };
      const done = (): void => finish(true);
      const timer = setTimeout(() => finish(false), timeoutMs);
      this.onIdle.add(done);
    });
  }

  /** Records the step of the operation under way on a session (ignored when there is none). */
  report(id: string, step: string, doneBytes?: number, totalBytes?: number): void {
    const op = this.busy.get(id);
    if (op) this.busy.set(id, { ...op, step, doneBytes: doneBytes ?? null, totalBytes: totalBytes ?? null });
  }

  progress(id: string): OperationProgress | null {
    return this.busy.get(id) ?? null;
  }

  /** The operations under way here, each as "checkpoint of s1 (dumping, 12 of 64 MiB, since ...)": for a teardown that could not wait them out. */
  describeUnderWay(): string[] {
    const mib = (n: number): string => `${Math.round(n / 2 ** 20)}`;
    return [...this.busy].map(([id, p]) => `${p.operation} of ${id} (${p.step}${p.doneBytes !== null ? `, ${mib(p.doneBytes)}${p.totalBytes !== null ? ` of ${mib(p.totalBytes)}` : ''} MiB` : ''}, since ${p.startedAt})`);
  }
}
