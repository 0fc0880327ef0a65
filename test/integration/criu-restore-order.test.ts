import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpAndRestore, startIsolatedPython, stopProcesses } from '../../src/criu/probe.js';
import { loadSelectedCriu } from '../../src/criu/select.js';
import { waitFor } from '../../src/util/exec.js';
import { childrenOf } from '../../src/util/proc.js';

// A session's shape: a parent (P), a child forked without exec that shares the parent's memory (C), and a
// grandchild that exec'd the same interpreter (G, as a Jupyter server starts its kernels). Each holds memory of a
// known digest; SIGUSR1 makes it check that memory and write "ok" or "bad" into DIR/ROLE.
const TREE_PY = `
import hashlib, os, signal, subprocess, sys, time
out = sys.argv[1]
role = sys.argv[2] if len(sys.argv) > 2 else 'P'
def pattern(mib, seed):
    return bytearray(bytes((i * seed) & 255 for i in range(256)) * (mib << 12))
held = []
def hold(buf):
    held.append((buf, hashlib.sha256(buf).hexdigest()))
def check(*_):
    good = all(hashlib.sha256(b).hexdigest() == d for b, d in held)
    with open(os.path.join(out, role), 'w') as f: f.write('ok' if good else 'bad')
if role == 'G':
    hold(pattern(4, 13))
    signal.signal(signal.SIGUSR1, check)
    open(os.path.join(out, 'G.ready'), 'w').close()
    while True: time.sleep(3600)
hold(pattern(8, 7))
if os.fork() == 0:
    role = 'C'
    hold(pattern(2, 11))
    subprocess.Popen([sys.executable, __file__, out, 'G'])
    signal.signal(signal.SIGUSR1, check)
    while True: time.sleep(3600)
signal.signal(signal.SIGUSR1, check)
while not os.path.exists(os.path.join(out, 'G.ready')): time.sleep(0.01)
print('ready', flush=True)
while True: time.sleep(3600)
`;

/** criu's restore log, as (task, message) in order: lines a restored task logged, "(time)  PID: message". */
function taskLines(log: string): Array<{ task: number; msg: string }> {
  return log.split('\n').flatMap((line) => {
    const m = /^\(\s*[\d.]+\)\s+(\d+): (.*)$/.exec(line);
    return m ? [{ task: Number(m[1]), msg: m[2]! }] : [];
  });
}

describe("hubshift's criu restoring a process tree (restore-children-before-fill.patch)", () => {
  let dir: string;
  const pids: number[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hubshift-restore-order-'));
  });
  afterAll(async () => {
    await stopProcesses(pids);
    await rm(dir, { recursive: true, force: true });
  });

  it("should fork a child that exec'd before filling its parent's memory, keep a forked child's memory shared with its parent, and restore every process's memory intact", async () => {
    const bin = await loadSelectedCriu();
    const out = join(dir, 'out');
    await mkdir(out);
    const p = await startIsolatedPython(dir, 'tree', TREE_PY, [out]);
    pids.push(...p.pids);
    const restored = await dumpAndRestore(bin, dir, p.init);
    pids.push(restored);

    const lines = taskLines(await readFile(join(dir, 'restore.log'), 'utf8'));
    // Each fork, with where the parent logged it.
    const forks = lines.flatMap((l, line) => {
      const m = /^Forking task with (\d+) pid/.exec(l.msg);
      return m ? [{ parent: l.task, child: Number(m[1]), line }] : [];
    });
    // In the namespace: P is 1; it forks C, which forks G.
    const c = forks.find((f) => f.parent === 1);
    const g = forks.find((f) => f.parent === c?.child);
    expect(c, 'P forked no child in the restore log').toBeDefined();
    expect(g, 'C forked no child in the restore log').toBeDefined();
    const at = (task: number, re: RegExp): number => lines.findIndex((l) => l.task === task && re.test(l.msg));
    const filled = (task: number): number => at(task, /^nr_restored_pages:/);
    // C shares P's memory: P fills before it forks C, as stock criu does for every child.
    expect(filled(1)).toBeGreaterThanOrEqual(0);
    expect(filled(1)).toBeLessThan(c!.line);
    // G shares none of C's (it exec'd): C forks it first, and both fill at once.
    expect(filled(c!.child)).toBeGreaterThan(g!.line);
    const shared = /^nr_shared_pages:\s+(\d+)/.exec(lines[at(c!.child, /^nr_shared_pages:/)]?.msg ?? '');
    expect(Number(shared?.[1] ?? 0), "C's pages equal to P's were not left shared").toBeGreaterThan(0);

    const [cPid] = await childrenOf(restored);
    const [gPid] = await childrenOf(cPid!);
    for (const pid of [restored, cPid!, gPid!]) process.kill(pid, 'SIGUSR1');
    for (const role of ['P', 'C', 'G']) {
      expect(await waitFor(`${role} to check its memory`, async () => (await readFile(join(out, role), 'utf8').catch(() => '')) || undefined, { timeoutMs: 10_000 })).toBe('ok');
    }
  });
});
