/**
 * The options node runs an agent with: the systemd unit, local test hosts
 * (LocalProvider) and `npx hubshift` (bin/hubshift.js's first line) pass
 * them. V8 starts an old generation of a few MB and grows it slowly: an
 * agent collected it two or three times in each post-copy move's frozen
 * window here (marking on both cores, then a 7-20 ms pause). At 256 MiB
 * from the start, moves ran without: 1 GiB post-copy downtime medians
 * 0.51-0.61 s against 0.62-0.66 s, five runs of eight moves a side
 * alternated on 2026-12-01. It costs up to 150 MB more of the agent's
 * resident memory. Only a command line sets it (not NODE_OPTIONS, not
 * v8.setFlagsFromString once the heap exists).
 */
export const AGENT_NODE_OPTIONS = ['--initial-old-space-size=256'] as const;

/** The options of AGENT_NODE_OPTIONS that `execArgv` (this process's, by default) lacks. */
export function missingAgentNodeOptions(execArgv: readonly string[] = process.execArgv): string[] {
  return AGENT_NODE_OPTIONS.filter((o) => !execArgv.includes(o));
}
