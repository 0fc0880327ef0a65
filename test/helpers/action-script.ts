/**
 * A line of an operator's criu action script that SIGKILLs the process whose
 * pid the file `killFile` holds (an agent), while it holds one, at a
 * restore's post-restore stage: inside criu restore, every task restored,
 * which criu then finishes without the agent that started it.
 */
export function killAtPostRestore(killFile: string): string {
  return `[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] && [ -s '${killFile}' ] && kill -9 "$(cat '${killFile}')"\n`;
}
