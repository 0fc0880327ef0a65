import type { Command } from 'commander';
import { AgentClient } from '../agent/agent-client.js';
import type { SessionView } from '../core/session.js';
import { Progress, printResult } from './output.js';
import { readTokenFile } from './token-file.js';

interface ConnOpts {
  agent: string;
  tokenFile: string;
  json: boolean;
}

export async function agentClient(o: ConnOpts): Promise<AgentClient> {
  return new AgentClient(o.agent, await readTokenFile(o.tokenFile));
}

function withConn(cmd: Command): Command {
  return cmd
    .requiredOption('--agent <url>', 'the node agent, e.g. http://127.0.0.1:7301')
    .requiredOption('--token-file <file>', "file holding the agent's bearer token")
    .option('--json', 'print one JSON object', false);
}

function line(s: SessionView): string {
  return `${s.id}  ${s.user.padEnd(12)} ${s.state.padEnd(12)} ${s.url}${s.error ? `  (${s.error})` : ''}`;
}

const mib = (n: number): string => (n / 2 ** 20).toFixed(0);

/**
 * Runs a long call with a progress line: the agent's own step and bytes for
 * the session when `watch` names one, else that it is still going.
 */
export async function withTicker<T>(label: string, quiet: boolean, fn: () => Promise<T>, watch?: { client: AgentClient; sessionId: string }): Promise<T> {
  const p = new Progress(label, quiet);
  p.step('started');
  const tick = async (): Promise<void> => {
    const op = watch ? await watch.client.progress(watch.sessionId).catch(() => null) : null;
    if (!op) return p.step('working');
    const bytes = op.doneBytes === null ? '' : ` ${mib(op.doneBytes)}${op.totalBytes ? `/${mib(op.totalBytes)}` : ''} MiB`;
    p.step(`${op.step}${bytes}`);
  };
  const t = setInterval(() => void tick(), 1000);
  try {
    return await fn();
  } finally {
    clearInterval(t);
    p.step('done');
    p.done();
  }
}

export function registerSessionCommands(program: Command): void {
  const session = program.command('session').description("users' Jupyter sessions on a node agent");

  withConn(session.command('start').description('start a Jupyter session for a user; prints {"id","url","token"}'))
    .requiredOption('--user <name>', 'the user whose session it is (their home directory is mounted)')
    .action(async (o: ConnOpts & { user: string }) => {
      const c = await agentClient(o);
      const s = await withTicker(`starting session for ${o.user}`, o.json, () => c.startSession(o.user));
      printResult(o.json, { id: s.id, url: s.url, token: s.token }, () => `${s.id} running at ${s.url}?token=${s.token}`);
    });

  withConn(session.command('ls').description('list sessions')).action(async (o: ConnOpts) => {
    const list = await (await agentClient(o)).listSessions();
    printResult(o.json, { sessions: list }, () => (list.length ? list.map(line).join('\n') : 'no sessions'));
  });

  withConn(session.command('show').description("one session's state and its metrics").argument('<id>', 'session id')).action(async (id: string, o: ConnOpts) => {
    const c = await agentClient(o);
    const s = await c.getSession(id);
    const metrics = s.state === 'running' ? await c.metrics(id) : null;
    printResult(o.json, { ...s, metrics }, () => `${line(s)}${metrics ? `\n${JSON.stringify(metrics, null, 2)}` : ''}`);
  });

  withConn(session.command('rm').description('stop a session and forget it (its checkpoints stay in the store)').argument('<id>', 'session id')).action(
    async (id: string, o: ConnOpts) => {
      await (await agentClient(o)).removeSession(id);
      printResult(o.json, { id, removed: true }, () => `${id} removed`);
    },
  );

  withConn(program.command('checkpoint').description('freeze a session into the store; prints {"checkpoint","bytes","seconds"}').argument('<id>', 'session id'))
    .option('--leave-running', 'keep the session running after the dump', false)
    .action(async (id: string, o: ConnOpts & { leaveRunning: boolean }) => {
      const c = await agentClient(o);
      const r = await withTicker(`checkpointing ${id}`, o.json, () => c.checkpoint(id, o.leaveRunning), { client: c, sessionId: id });
      printResult(o.json, r, () => `${r.checkpoint}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(2)} s`);
    });

  withConn(program.command('restore').description('bring a checkpoint back as the same session; prints {"id","url","token","seconds"}').argument('<checkpoint>', 'checkpoint id')).action(
    async (ckpt: string, o: ConnOpts) => {
      const c = await agentClient(o);
      const sessionId = o.json ? undefined : await c.manifest(ckpt).then((m) => m.sessionId, () => undefined);
      const r = await withTicker(`restoring ${ckpt}`, o.json, () => c.restore(ckpt), sessionId ? { client: c, sessionId } : undefined);
      printResult(o.json, { id: r.id, url: r.url, token: r.token, seconds: r.seconds }, () => `${r.id} running again at ${r.url} (${r.seconds.toFixed(2)} s)`);
    },
  );

  withConn(program.command('checkpoints').description('list committed checkpoints in the agent\'s store')).action(async (o: ConnOpts) => {
    const list = await (await agentClient(o)).listCheckpoints();
    printResult(o.json, { checkpoints: list }, () => (list.length ? list.join('\n') : 'no checkpoints'));
  });
}
