import { type Command, Option } from 'commander';
import type { AgentClient } from '../agent/agent-client.js';
import type { MoveMode } from '../core/checkpoint.js';
import type { Operation, PlacedSession } from '../core/control.js';
import { InputError } from '../core/errors.js';
import type { SessionView } from '../core/session.js';
import type { SchedulerClient } from '../scheduler/scheduler-client.js';
import { failureOf, followOperation, schedulerClient } from './scheduler-client-options.js';
import { Progress, printResult } from './output.js';
import { readTokenFile } from './token-file.js';

interface ConnOpts {
  agent?: string;
  scheduler?: string;
  tokenFile: string;
  json: boolean;
  wait?: boolean;
}

export async function agentClient(o: ConnOpts): Promise<AgentClient> {
  if (!o.agent) throw new InputError('give --agent URL (a node agent) or --scheduler URL');
  // The client (and the move stream's code under it) loads where a command asks an agent: main.ts keeps start-up light.
  const { AgentClient } = await import('../agent/agent-client.js');
  return new AgentClient(o.agent, await readTokenFile(o.tokenFile));
}

/** The scheduler's client when --scheduler is given, else null (the command talks to an agent). */
async function viaScheduler(o: ConnOpts): Promise<SchedulerClient | null> {
  if (o.agent && o.scheduler) throw new InputError('give --agent or --scheduler, not both');
  if (!o.agent && !o.scheduler) throw new InputError('give --agent URL (one node agent) or --scheduler URL (the scheduler places and moves sessions)');
  return o.scheduler ? schedulerClient({ scheduler: o.scheduler, tokenFile: o.tokenFile }) : null;
}

function withConn(cmd: Command): Command {
  return cmd
    .option('--agent <url>', 'talk to one node agent, e.g. http://127.0.0.1:7301')
    .option('--scheduler <url>', 'talk to the scheduler instead, e.g. http://127.0.0.1:7300')
    .requiredOption('--token-file <file>', "file holding the agent's or the scheduler's bearer token")
    .option('--json', 'print one JSON object', false);
}

function placedLine(s: PlacedSession): string {
  const lost = s.lostWithNode ? `  (lost with ${s.lostWithNode.node} at ${s.lostWithNode.at}: back at ${s.lostWithNode.checkpoint})` : '';
  return `${s.id}  ${s.user.padEnd(12)} ${s.state.padEnd(12)} ${(s.node ?? '(store)').padEnd(12)} ${s.url}${s.operation ? `  [${s.operation}]` : ''}${lost}`;
}

/** Submits an operation to the scheduler and, unless --no-wait, follows it to its end (exit 1 if it failed). */
async function runOperation(c: SchedulerClient, o: ConnOpts, submit: () => Promise<Operation>): Promise<void> {
  const op = await submit();
  if (o.wait === false) return printResult(o.json, { operation: op }, () => `operation ${op.id} queued (${op.kind} ${op.sessionId ?? ''})`);
  const st = await followOperation(c, op.id, o.json);
  const session = op.sessionId ? await c.getSession(op.sessionId).catch(() => null) : null;
  printResult(o.json, { ...st, session }, () => (st.status === 'completed' ? `${op.kind} ${op.sessionId} done${session ? `: ${placedLine(session)}` : ''}` : `${op.kind} ${op.sessionId}: ${failureOf(st)}`));
  if (st.status === 'failed') process.exitCode = 1;
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
  const session = program.command('session').description("users' Jupyter sessions, on one node agent (--agent) or placed by the scheduler (--scheduler)");

  withConn(session.command('start').description('start a Jupyter session for a user; prints {"id","url","token"}'))
    .requiredOption('--user <name>', 'the user whose session it is (their home directory is mounted)')
    .option('--node <name>', 'with --scheduler: start it on this node (default: the cheapest with room)')
    .action(async (o: ConnOpts & { user: string; node?: string }) => {
      const sc = await viaScheduler(o);
      if (sc) {
        const p = await withTicker(`starting session for ${o.user}`, o.json, () => sc.startSession(o.user, { node: o.node }));
        return printResult(o.json, p, () => `${p.id} running on ${p.node} at ${p.url}?token=${p.token}`);
      }
      const c = await agentClient(o);
      const s = await withTicker(`starting session for ${o.user}`, o.json, () => c.startSession(o.user));
      printResult(o.json, { id: s.id, url: s.url, token: s.token }, () => `${s.id} running at ${s.url}?token=${s.token}`);
    });

  withConn(session.command('ls').description('list sessions')).action(async (o: ConnOpts) => {
    const sc = await viaScheduler(o);
    if (sc) {
      const placed = await sc.listSessions();
      return printResult(o.json, { sessions: placed }, () => (placed.length ? placed.map(placedLine).join('\n') : 'no sessions'));
    }
    const list = await (await agentClient(o)).listSessions();
    printResult(o.json, { sessions: list }, () => (list.length ? list.map(line).join('\n') : 'no sessions'));
  });

  withConn(session.command('show').description("one session's state and its metrics; with --scheduler prints {\"id\",\"node\",\"state\",\"url\",\"token\",...}").argument('<id>', 'session id')).action(async (id: string, o: ConnOpts) => {
    const sc = await viaScheduler(o);
    if (sc) {
      const p = await sc.getSession(id);
      return printResult(o.json, p, () => placedLine(p));
    }
    const c = await agentClient(o);
    const s = await c.getSession(id);
    const metrics = s.state === 'running' ? await c.metrics(id) : null;
    printResult(o.json, { ...s, metrics }, () => `${line(s)}${metrics ? `\n${JSON.stringify(metrics, null, 2)}` : ''}`);
  });

  withConn(session.command('rm').description('stop a session and forget it (its checkpoints stay in the store)').argument('<id>', 'session id')).action(
    async (id: string, o: ConnOpts) => {
      const sc = await viaScheduler(o);
      await (sc ? sc.removeSession(id) : (await agentClient(o)).removeSession(id));
      printResult(o.json, { id, removed: true }, () => `${id} removed`);
    },
  );

  withConn(program.command('checkpoint').description('freeze a session into the store; prints {"checkpoint","bytes","seconds"}').argument('<id>', 'session id'))
    .option('--leave-running', 'keep the session running after the dump', false)
    .option('--no-wait', 'with --scheduler: print the queued operation and return')
    .action(async (id: string, o: ConnOpts & { leaveRunning: boolean }) => {
      const sc = await viaScheduler(o);
      if (sc) return runOperation(sc, o, () => sc.checkpoint(id, o.leaveRunning));
      const c = await agentClient(o);
      const r = await withTicker(`checkpointing ${id}`, o.json, () => c.checkpoint(id, o.leaveRunning), { client: c, sessionId: id });
      printResult(o.json, r, () => `${r.checkpoint}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(2)} s`);
    });

  withConn(
    program
      .command('restore')
      .description('bring a checkpoint back as the same session; prints {"id","url","token","seconds"}. With --agent: a checkpoint id; with --scheduler: a session id (its last checkpoint)')
      .argument('<checkpoint-or-session>', 'checkpoint id (--agent) or session id (--scheduler)'),
  )
    .option('--node <name>', 'with --scheduler: restore on this node (default: the cheapest with room)')
    .option('--no-wait', 'with --scheduler: print the queued operation and return')
    .action(async (ckpt: string, o: ConnOpts & { node?: string }) => {
      const sc = await viaScheduler(o);
      if (sc) return runOperation(sc, o, () => sc.restore(ckpt, o.node));
      const c = await agentClient(o);
      const sessionId = o.json ? undefined : await c.manifest(ckpt).then((m) => m.sessionId, () => undefined);
      const r = await withTicker(`restoring ${ckpt}`, o.json, () => c.restore(ckpt), sessionId ? { client: c, sessionId } : undefined);
      printResult(o.json, { id: r.id, url: r.url, token: r.token, seconds: r.seconds }, () => `${r.id} running again at ${r.url} (${r.seconds.toFixed(2)} s)`);
    });

  withConn(
    program
      .command('migrate')
      .description(
        'move a running session to another node. With --scheduler: --to NODE, queued like any operation. With --agent SOURCE_URL: --to TARGET_AGENT_URL, streamed agent to agent; prints {"id","url","mode","downtimeSeconds","seconds"}. Any failure resumes it where it was',
      )
      .argument('<session>', 'session id'),
  )
    .requiredOption('--to <node-or-url>', 'the node (with --scheduler) or the target agent URL (with --agent)')
    .option('--target-token-file <file>', "with --agent: the target agent's token (default: --token-file's)")
    .addOption(new Option('--mode <mode>', 'with --agent: how to move. auto: post-copy where both agents can, retried stop-and-copy if it fails; stop-and-copy where they cannot, or where a kernel thread\'s page-aligned stack pointer would make criu dump its process whole (see README)').choices(['auto', 'stop-and-copy', 'post-copy']).default('auto'))
    .option('--no-wait', 'with --scheduler: print the queued operation and return')
    .option('--no-precopy', "with --agent, post-copy: send the memory restored eagerly after the freeze, instead of copying it ahead while the session runs (the agent's default, unless it runs with --no-post-copy-precopy)")
    .action(async (id: string, o: ConnOpts & { to: string; targetTokenFile?: string; mode: MoveMode; precopy: boolean }) => {
      const sc = await viaScheduler(o);
      if (sc) return runOperation(sc, o, () => sc.migrate(id, o.to));
      const c = await agentClient(o);
      const target = { url: o.to, token: await readTokenFile(o.targetTokenFile ?? o.tokenFile) };
      const r = await withTicker(`moving ${id} to ${o.to}`, o.json, () => c.move(id, target, o.mode, undefined, o.precopy ? {} : { precopy: false }), { client: c, sessionId: id });
      printResult(o.json, { id: r.id, url: r.url, mode: r.mode, downtimeSeconds: r.downtimeSeconds, seconds: r.seconds }, () => `${r.id} runs at ${r.target} now, same url ${r.url} (${r.mode}: ${r.downtimeSeconds.toFixed(2)} s down, ${r.seconds.toFixed(2)} s in all)`);
    });

  withConn(program.command('checkpoints').description('list committed checkpoints in the agent\'s store')).action(async (o: ConnOpts) => {
    const list = await (await agentClient(o)).listCheckpoints();
    printResult(o.json, { checkpoints: list }, () => (list.length ? list.join('\n') : 'no checkpoints'));
  });
}
