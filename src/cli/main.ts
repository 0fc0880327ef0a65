import { Command } from 'commander';
import { registerCriuCommand } from './criu-command.js';
import { fail } from './output.js';

const program = new Command();
program
  .name('hubshift')
  .description('Checkpoint, restore and move running Jupyter sessions with CRIU')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: false });

registerCriuCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  fail(err);
}
