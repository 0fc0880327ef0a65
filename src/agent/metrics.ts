import { readFileSync } from 'node:fs';
import type { Session } from '../core/session.js';
import { sessionUrl } from '../core/session.js';
import { processTree } from '../util/proc.js';
import { JupyterRest } from './jupyter-rest.js';

export interface KernelMetrics {
  id: string;
  name: string;
  executionState: string;
  busy: boolean;
  connections: number;
  lastActivity: string;
}

export interface SessionMetrics {
  sessionId: string;
  at: string;
  /** Sum of resident memory of every process in the session. */
  rssBytes: number;
  /** User + system CPU seconds of the session's live processes since they started. */
  cpuSeconds: number;
  processes: number;
  kernels: KernelMetrics[];
  /** Open client connections (websockets) to the server, from its own API. */
  connections: number;
  /** The server's own last activity: the latest request or kernel message. */
  lastActivity: string | null;
}

const CLK_TCK = 100; // Linux's USER_HZ on every supported architecture

async function procSample(pid: number): Promise<{ rss: number; cpu: number }> {
  try {
    // Synchronously, as /proc is read in util/proc.ts: microseconds each, where the thread pool's round trips cost more.
    const [status, stat] = [readFileSync(`/proc/${pid}/status`, 'utf8'), readFileSync(`/proc/${pid}/stat`, 'utf8')];
    const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    const cpu = (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
    return { rss: rssKb * 1024, cpu };
  } catch {
    return { rss: 0, cpu: 0 };
  }
}

/** Memory and CPU of a process tree, from /proc. */
export async function sampleProcesses(root: number): Promise<{ rssBytes: number; cpuSeconds: number; processes: number }> {
  const out = { rssBytes: 0, cpuSeconds: 0, processes: 0 };
  for (const pid of await processTree(root)) {
    const p = await procSample(pid);
    out.rssBytes += p.rss;
    out.cpuSeconds += p.cpu;
    out.processes += 1;
  }
  return out;
}

export async function sampleSession(s: Session): Promise<SessionMetrics> {
  const out: SessionMetrics = { sessionId: s.id, at: new Date().toISOString(), rssBytes: 0, cpuSeconds: 0, processes: 0, kernels: [], connections: 0, lastActivity: null };
  if (s.pid === null) return out;
  Object.assign(out, await sampleProcesses(s.pid));
  // Only a running session's server can answer (one restored stopped, or being dumped, would hold this for the timeout).
  if (s.state !== 'running') return out;
  const rest = new JupyterRest(sessionUrl(s), s.token, 2_000);
  try {
    const [status, kernels] = await Promise.all([rest.status(), rest.kernels()]);
    out.connections = status.connections;
    out.lastActivity = status.last_activity;
    out.kernels = kernels.map((k) => ({
      id: k.id,
      name: k.name,
      executionState: k.execution_state,
      busy: k.execution_state === 'busy',
      connections: k.connections,
      lastActivity: k.last_activity,
    }));
  } catch {
    /* the server is not answering: process figures only */
  }
  return out;
}
