import { describe, expect, it } from 'vitest';
import { diagnoseCriuLog } from '../../src/criu/log.js';

const RLIMIT = "(00.048929) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted";

describe('criu log diagnosis', () => {
  it.each([
    ["(00.08)      1: Error (criu/cr-restore.c:1480): Can't fork for 412: File exists", 'pid_taken', 'pid 412 is taken on this node (run sessions in their own pid namespace)'],
    ['(00.08)      1: Error (criu/files-reg.c:2175): File tmp/exp/out.log has bad size 60 (expect 6)', 'file_changed', 'file /tmp/exp/out.log changed since the dump'],
    ['(00.10)      1: Error (criu/files-reg.c:2294): File tmp/s/server.log has bad mode 0100600 (expect 0100644)', 'file_changed', 'changed mode since the dump'],
    ['(00.09)      1: Error (criu/files-reg.c:2214): File usr/lib/x86_64-linux-gnu/libz.so.1.2.13 has bad build-ID', 'file_changed', 'file /usr/lib/x86_64-linux-gnu/libz.so.1.2.13 is another build than at the dump'],
    ["(00.05) Error (criu/sk-inet.c:99): sockets: Can't get 1:16 opt: Operation not supported", 'tcp_unsupported', 'use criu 4.2 or newer'],
    ['(00.01) Error (criu/kerndat.c:1615): vdso: Unexpected rt vDSO area bounds', 'vdso_unsupported', "this kernel's vDSO"],
    ["(00.30) Error (criu/net.c:1800): Can't restore link: -17", 'link_exists', 'already exists on this node'],
    // What criu 4.2.1's lazy page server printed here while fs.pipe-max-size was 1 MiB.
    ['(00.200386) Error (criu/page-pipe.c:418): page-pipe: tee: 65536: Operation not permitted', 'pipe_too_small', 'sysctl fs.pipe-max-size=4194304'],
  ])('should read %s as %s', (line, kind, words) => {
    const d = diagnoseCriuLog([RLIMIT, line, '(00.1) Error (criu/cr-restore.c:2331): Restoring FAILED.'].join('\n'));
    expect(d.kind).toBe(kind);
    expect(d.explanation).toContain(words);
  });

  it('should skip the harmless rlimit line and lines that merely contain the word error', () => {
    const log = [
      RLIMIT,
      '(00.09) Collected [usr/lib/python3/dist-packages/zmq/backend/cython/error.cpython-311.so] ID 0x18',
      "(00.10)      1: Error (criu/files.c:1221): Unable to open fd=1 id=0x4e",
      '(00.11) Error (criu/cr-restore.c:2331): Restoring FAILED.',
    ].join('\n');
    const d = diagnoseCriuLog(log);
    expect(d.kind).toBe('unknown');
    expect(d.explanation).toBe('Unable to open fd=1 id=0x4e');
  });

  it('should name the action script that failed, from a log without timestamps (criu -v2)', () => {
    // What criu 4.2.1 wrote at -v2 when a post-dump script exited 1.
    const log = [
      "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
      'Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore 17635 with interrupted system call',
      'Error (criu/util.c:657): exited, status=1',
      'Error (criu/action-scripts.c:94): Script /tmp/v2t/hook.sh exited with -1',
      'Error (criu/action-scripts.c:156): One of more action scripts failed',
      'Error (criu/cr-dump.c:1975): Dumping FAILED.',
    ].join('\n');
    const d = diagnoseCriuLog(log);
    expect(d.kind).toBe('action_script');
    expect(d.explanation).toBe('the action script /tmp/v2t/hook.sh failed, and criu gave up (its output, if any, is in the log just before)');
  });

  it('should say so when the log holds no error', () => {
    expect(diagnoseCriuLog(RLIMIT).explanation).toBe('no error in the log');
  });
});
