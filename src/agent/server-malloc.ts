import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A session's Jupyter server runs on glibc's malloc (PYTHONMALLOC=malloc)
 * instead of Python's own allocator: its objects then lie in glibc's heap,
 * which the session's GLIBC_TUNABLES (huge-page-collapse.ts) advise into huge
 * pages, where Python's allocator maps its arenas itself, unadvised. criu
 * (hubshift's build, README "Which criu") fills advised memory in huge pages
 * at a restore, and a restore fills the server's memory before it runs: with
 * this, ~72 of its ~77 MB are advised instead of ~25 (2026-12-03), and
 * criu's restore took 0.14-0.15 s instead of 0.29-0.33 s. The server holds
 * ~3% more memory this way (97 against 94 MB).
 *
 * The kernels the server starts get the allocator they would have had
 * (Python's own, or what the user set): a config file that the server reads
 * as it starts takes the setting out of the environment it passes on. A
 * user's own PYTHONMALLOC applies to the server too.
 */
const MARKER = 'HUBSHIFT_SERVER_PYTHONMALLOC';

const CONFIG_PY = `# Written by the hubshift agent (src/agent/server-malloc.ts): this server runs
# on glibc's malloc; the kernels it starts get Python's own allocator.
import os
if os.environ.pop('${MARKER}', None) is not None:
    os.environ.pop('PYTHONMALLOC', None)
`;

/** The environment that puts the server on glibc's malloc, given the session's own; nothing if the user chose an allocator. */
export function serverMallocEnv(sessionEnv: Readonly<Record<string, string>>, configDir: string): Record<string, string> {
  if (sessionEnv.PYTHONMALLOC !== undefined) return {};
  const userPath = sessionEnv.JUPYTER_CONFIG_PATH;
  return { PYTHONMALLOC: 'malloc', [MARKER]: '1', JUPYTER_CONFIG_PATH: userPath ? `${configDir}:${userPath}` : configDir };
}

/** Writes the config that the notebook server (and a jupyter_server one) reads from `configDir` as it starts. */
export function writeServerMallocConfig(configDir: string): void {
  mkdirSync(configDir, { recursive: true, mode: 0o700 });
  for (const name of ['jupyter_notebook_config.py', 'jupyter_server_config.py']) writeFileSync(join(configDir, name), CONFIG_PY);
}
