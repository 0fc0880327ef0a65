/**
 * A line of an operator's criu action script that SIGKILLs the process whose
 * pid the file `killFile` holds (an agent), while it holds one, at a
 * restore's post-restore stage: inside criu restore, every task restored,
 * which criu then finishes without the agent that started it.
 */
export function killAtPostRestore(killFile: string): string {
  return `[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] && [ -s '${killFile}' ] && kill -9 "$(cat '${killFile}')"\n`;
}

/**
 * A line of an operator's criu action script that SIGKILLs the process whose
 * pid the file `killFile` holds (an agent), while it holds one, at a dump's
 * post-dump stage (every page written or pushed, the session frozen and
 * locked, nothing committed), then holds criu `lingerSeconds` more: criu
 * outlives the agent that started it, as it did by up to a second here.
 */
export function killAtPostDump(killFile: string, lingerSeconds: number): string {
  return `[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && [ -s '${killFile}' ] && { kill -9 "$(cat '${killFile}')"; sleep ${lingerSeconds}; }\n`;
}

/** A line of an operator's criu action script that holds a dump at its post-dump stage for `seconds`: a long checkpoint. */
export function holdAtPostDump(seconds: number): string {
  return `[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && sleep ${seconds}\n`;
}
