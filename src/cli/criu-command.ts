import type { Command } from 'commander';
import { printResult } from './output.js';

/** criu's probes load only where a command runs (main.ts keeps commands' start-up light). */
const criuSelect = () => import('../criu/select.js');

export function registerCriuCommand(program: Command): void {
  const criu = program.command('criu').description('find and check the criu that hubshift uses on this machine');
  criu
    .command('select')
    .description('probe candidate criu binaries (dump and restore of a TCP connection) and record the first that works')
    .option('--install', "build criu with hubshift's patches (first, when not built yet), and install Debian unstable's criu into a private prefix when no candidate works", false)
    .option('--force', 'probe again even if a choice is recorded for this kernel', false)
    .option('--work-dir <dir>', 'scratch directory for the probe', '/var/lib/hubshift/probe')
    .option('--json', 'print one JSON object', false)
    .action(async (o: { install: boolean; force: boolean; workDir: string; json: boolean }) => {
      const { selectCriu, patchFiles, CRIU_CACHE_FILE } = await criuSelect();
      const { criuExecutable } = await import('../criu/binary.js');
      const { chosen, tried } = await selectCriu({ install: o.install, force: o.force, workDir: o.workDir, log: (m) => process.stderr.write(`criu: ${m}\n`) });
      const patches = (await patchFiles()).map((n) => n.replace(/\.patch$/, '')).join(', ');
      printResult(o.json, { chosen, tried }, () => {
        const lines = tried.filter((t) => !t.ok).map((t) => `criu: ${t.source} criu ${t.version ?? ''} does not work here: ${t.reason}`);
        const where =
          chosen.source === 'private'
            ? `Debian unstable's criu ${chosen.version}, private prefix (${criuExecutable(chosen)})`
            : chosen.source === 'built'
              ? `hubshift's build of criu ${chosen.version} with its patches (${patches}) (${chosen.argv.join(' ')})`
              : `${chosen.source} criu ${chosen.version} (${chosen.argv.join(' ')})`;
        lines.push(`criu: using ${where}; recorded in ${CRIU_CACHE_FILE}${chosen.hugePageFill ? '' : '; restores fill memory 4 KiB at a time'}${chosen.memDirtyTrack ? '' : '; soft-dirty tracking is off on this kernel (no pre-copy)'}${chosen.postCopy && !chosen.postCopy.ok ? `; post-copy does not work here: ${chosen.postCopy.reason}` : ''}${chosen.lazyStackExact === false ? "; a lazy dump takes a process whole when a thread's stack pointer is page-aligned" : ''}`);
        return lines.join('\n');
      });
    });
  criu
    .command('show')
    .description('print the criu recorded for this machine')
    .option('--json', 'print one JSON object', false)
    .action(async (o: { json: boolean }) => {
      const { loadSelectedCriu } = await criuSelect();
      const bin = await loadSelectedCriu();
      printResult(o.json, bin, () => `${bin.source} criu ${bin.version}: ${bin.argv.join(' ')}`);
    });
}
