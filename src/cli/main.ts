import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerAgentCommand } from './agent-command.js';
import { registerCriuCommand } from './criu-command.js';
import { registerDemoCommand } from './demo-command.js';
import { registerGatewayCommand } from './gateway-command.js';
import { registerLocalCommands } from './local-command.js';
import { registerPlanCommand } from './plan-command.js';
import { registerSchedulerCommands } from './scheduler-command.js';
import { registerSessionCommands } from './session-commands.js';
import { registerSimulateCommands } from './simulate-command.js';
import { fail, usageErrorsAreBadInput } from './output.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command();
program
  .name('hubshift')
  .version(pkg.version)
  .description('Checkpoint, restore and move running Jupyter sessions with CRIU')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: false });
usageErrorsAreBadInput(program);

// Each command's own code (the agent, the scheduler, BullMQ, the AWS SDK, the clients, the policy engine, the
// simulator) is imported in its action, not here, so that a command loads what it runs: `hubshift --help` took 2.2 s
// with all of it loaded, and takes about 0.6 s without (test/unit/cli-start.test.ts keeps it so).
registerAgentCommand(program);
registerSchedulerCommands(program);
registerGatewayCommand(program);
registerSessionCommands(program);
registerCriuCommand(program);
registerPlanCommand(program);
registerLocalCommands(program);
registerDemoCommand(program);
registerSimulateCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  fail(err);
}
