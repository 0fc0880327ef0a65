/**
 * What a bench has started, stopped if the run is interrupted (Ctrl-C,
 * SIGTERM) as well as when it ends: each bench stops its own agents, hosts
 * and servers through their handles, never by name. A cleanup runs once,
 * whichever comes first: the bench's own `finally` or the signal.
 */
const pending = new Set<() => Promise<void>>();
let stoppedBy: NodeJS.Signals | null = null;

/** Registers `stop` for an interrupt; returns it, run once, to be awaited where the bench ends. */
export function stopOnInterrupt(stop: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  const once = (): Promise<void> => (running ??= stop());
  pending.add(once);
  return async () => {
    pending.delete(once);
    await once();
  };
}

/** The signal that interrupted the run, or null. */
export function interruptedBy(): NodeJS.Signals | null {
  return stoppedBy;
}

/** On SIGINT or SIGTERM: runs every registered cleanup, then exits 130 or 143 (a second signal changes nothing). */
export function handleInterrupts(say: (m: string) => void): void {
  const on = (signal: NodeJS.Signals): void => {
    if (stoppedBy) return;
    stoppedBy = signal;
    say(`interrupted (${signal}): stopping what the bench started`);
    void Promise.allSettled([...pending].map((stop) => stop())).then((ends) => {
      for (const e of ends) if (e.status === 'rejected') say(`stopping: ${e.reason instanceof Error ? e.reason.message : String(e.reason)}`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
}
