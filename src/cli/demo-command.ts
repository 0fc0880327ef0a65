import type { Command } from 'commander';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      "hubshift's whole job on this machine: Redis, the scheduler, three test hosts, JupyterHub and four users; an idle checkpoint and wake, a spot eviction, a right-sizing move and a consolidation, each checked; then a report. Keeps the hub and the dashboard up until Ctrl-C",
    )
    .option('--headless', 'exit after the report: status 0 only if every check held', false)
    .action(async (o: { headless: boolean }) => {
      const say = (m: string): void => void process.stdout.write(`${m}\n`);
      let teardown: (() => Promise<void>) | null = null;
      let interrupted = false;
      // Ctrl-C at any moment: everything started so far is stopped, by the teardown the demo keeps.
      const onSignal = (): void => {
        if (interrupted) return;
        interrupted = true;
        say('\ninterrupted: stopping everything the demo started');
        void (teardown ? teardown() : Promise.resolve()).then(() => process.exit(130));
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      // Everything hubshift has loads only for this command (see main.ts).
      const { runDemo } = await import('../demo/demo.js');
      const r = await runDemo({ headless: o.headless, say, onTeardown: (stop) => (teardown = stop) });
      // Interrupted: the signal handler is stopping everything and exits when done.
      if (interrupted) return new Promise<never>(() => undefined);
      if (!o.headless && r.urls) {
        say(`\nJupyterHub: ${r.urls.hub} (any user name, no password)`);
        say(`dashboard:  ${r.urls.dashboard} (sign in with the token ${r.urls.token})`);
        say('Ctrl-C stops everything.');
        await new Promise<never>(() => undefined);
      }
      say('stopping everything the demo started');
      await r.teardown();
      process.exitCode = r.ok ? 0 : 1;
    });
}
