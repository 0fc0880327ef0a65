import { run } from '../util/exec.js';
import { PYTHON } from '../util/proc.js';

/**
 * With --tcp-established, criu puts every established TCP socket of the tree
 * into TCP_REPAIR mode while it dumps, and only criu turns it off again. A
 * criu that dies mid-dump leaves the sockets frozen: the processes run but no
 * byte moves (a kernel's ZMQ links to its server, a browser's websocket).
 *
 * This does what criu's own unlock does, from outside: it duplicates each
 * socket of the given processes with pidfd_getfd(2) (Linux 5.6+, needs
 * ptrace rights over them) and switches repair off where it is on. Python
 * does the syscalls because Node has no pidfd_getfd. Prints how many sockets
 * it released.
 */
const RELEASE_PY = `
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438
TCP_REPAIR = 19
released = 0
for pid in map(int, sys.argv[1:]):
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        continue
    try:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            try:
                if not os.readlink(f'/proc/{pid}/fd/{fd}').startswith('socket:'):
                    continue
            except OSError:
                continue
            dup = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            if dup < 0:
                continue
            try:
                s = socket.socket(fileno=dup)
                try:
                    if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6):
                        if s.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR):
                            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
                            released += 1
                finally:
                    s.detach()
            except OSError:
                pass
            finally:
                os.close(dup)
    finally:
        os.close(pidfd)
print(released)
`;

/** Switches TCP repair mode off on every socket of these processes that has it on; returns how many. */
export async function releaseTcpRepair(pids: readonly number[]): Promise<number> {
  if (pids.length === 0) return 0;
  const r = await run(PYTHON, ['-c', RELEASE_PY, ...pids.map(String)], { timeoutMs: 20_000 });
  return Number(r.stdout.trim()) || 0;
}
