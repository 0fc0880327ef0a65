import { readFile } from 'node:fs/promises';

/** A criu failure read from its log: what happened, and what to do about it. */
export interface CriuDiagnosis {
  /** A stable code for the kind of failure. */
  kind:
    | 'pid_taken'
    | 'file_changed'
    | 'link_exists'
    | 'tcp_unsupported'
    | 'vdso_unsupported'
    | 'tcp_not_enabled'
    | 'address_in_use'
    | 'permission'
    | 'pipe_too_small'
    | 'action_script'
    | 'unknown';
  /** The log line that says it. */
  line: string;
  /** Human words: what happened and what to do. */
  explanation: string;
}

// Lines criu prints on every run here that are not failures.
const HARMLESS = [/rlimit: Can't setup RLIMIT_NOFILE for self/, /ipv[46]: [Aa]ddress already assigned/];

const RULES: Array<{ re: RegExp; kind: CriuDiagnosis['kind']; explain: (m: RegExpMatchArray) => string }> = [
  {
    re: /Can't fork for (\d+): File exists/,
    kind: 'pid_taken',
    explain: (m) => `pid ${m[1]} is taken on this node (run sessions in their own pid namespace)`,
  },
  {
    re: /File (\S+) has bad mode (\d+) \(expect (\d+)\)/,
    kind: 'file_changed',
    explain: (m) => `file /${m[1]} changed mode since the dump (${m[2]}, expected ${m[3]}); files a session holds open must be unchanged at restore`,
  },
  {
    re: /File (\S+) has bad size (\d+) \(expect (\d+)\)/,
    kind: 'file_changed',
    explain: (m) =>
      `file /${m[1]} changed since the dump (size ${m[2]}, expected ${m[3]}); files a session holds open must be unchanged at restore`,
  },
  {
    // --file-validation buildid: the same size, another build (a library upgraded or rebuilt on this node).
    re: /File (\S+) has bad build-ID/,
    kind: 'file_changed',
    explain: (m) => `file /${m[1]} is another build than at the dump (its build-ID differs); restore on a node with the same libraries as the one it was dumped on`,
  },
  {
    re: /Can't restore link: -17|Link .* already exists/,
    kind: 'link_exists',
    explain: () => 'a network interface of the session already exists on this node (remove the stale veth, or the session is already running)',
  },
  {
    re: /sockets: Can't get \S+ opt: Operation not supported/,
    kind: 'tcp_unsupported',
    explain: () =>
      'this criu cannot dump TCP sockets on this kernel (Linux 6.16+ refuses SO_PASSCRED on inet sockets); use criu 4.2 or newer (npm run setup installs one)',
  },
  {
    re: /Unexpected rt vDSO area bounds|kerndat_vdso_fill_symtable failed/,
    kind: 'vdso_unsupported',
    explain: () => "this criu does not understand this kernel's vDSO; use a newer criu (npm run setup selects one that works)",
  },
  {
    re: /Connected TCP socket, consider using --tcp-established/,
    kind: 'tcp_not_enabled',
    explain: () => 'the process holds established TCP connections; dump with --tcp-established',
  },
  {
    re: /Can't bind.*Address already in use|EADDRINUSE/,
    kind: 'address_in_use',
    explain: () => "an address the session listens on is in use on this node (restore into the session's own network namespace)",
  },
  {
    // criu prints the short count with whatever errno was left: the pipe could not grow (see pipe-size.ts).
    re: /page-pipe: tee: (\d+)/,
    kind: 'pipe_too_small',
    explain: (m) =>
      `criu's lazy page server could copy only ${m[1]} bytes of a page pipe: its pipes cannot grow past fs.pipe-max-size without CAP_SYS_RESOURCE; run 'sysctl fs.pipe-max-size=4194304' (npm run setup and the agent do it)`,
  },
  {
    // criu's own words come after the script's ("exited, status=1"), and name neither the script nor the stage.
    re: /Script (\S+) exited with/,
    kind: 'action_script',
    explain: (m) => `the action script ${m[1]} failed, and criu gave up (its output, if any, is in the log just before)`,
  },
  {
    re: /Operation not permitted.*(seize|ptrace)|Can't seize/,
    kind: 'permission',
    explain: () => 'criu could not seize the process (run the agent as root with CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE)',
  },
];

/** A log line without criu's "(00.123456)" timestamp and "  1: " task prefix. */
function withoutPrefix(line: string): string {
  return line.replace(/^\([\d.]+\)\s*(\d+:\s*)?/, '');
}

/** Reads criu's log text and names the first real failure in it. */
export function diagnoseCriuLog(text: string): CriuDiagnosis {
  const lines = text.split('\n');
  for (const rule of RULES) {
    for (const line of lines) {
      const m = line.match(rule.re);
      if (m) return { kind: rule.kind, line: line.trim(), explanation: rule.explain(m) };
    }
  }
  // criu's own error lines read "Error (file.c:NN): ..."; other text may merely contain the word.
  const errors = lines.filter((l) => /\bError \(|^Error:/.test(withoutPrefix(l)) && !HARMLESS.some((h) => h.test(l)));
  // No error line: the last thing criu said, unless that is only the harmless noise.
  const first = errors.find((l) => !/FAILED/.test(l)) ?? errors[0] ?? lines.filter((l) => l.trim() && !HARMLESS.some((h) => h.test(l))).at(-1) ?? '';
  const words = withoutPrefix(first).replace(/^Error \([^)]*\):\s*/, '').trim();
  return { kind: 'unknown', line: first.trim(), explanation: words || 'no error in the log' };
}

export async function diagnoseCriuLogFile(path: string): Promise<CriuDiagnosis> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return { kind: 'unknown', line: '', explanation: `criu wrote no log at ${path}` };
  }
  return diagnoseCriuLog(text);
}
