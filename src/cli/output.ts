import type { Command } from 'commander';
import { HubshiftError, UpstreamError, errorMessage } from '../core/errors.js';

/** Prints a result: one JSON object with --json, else readable lines. */
export function printResult(json: boolean, value: unknown, human?: () => string): void {
  if (json || !human) process.stdout.write(`${JSON.stringify(value, null, json ? 0 : 2)}\n`);
  else process.stdout.write(`${human()}\n`);
}

/**
 * A progress line on stderr for long operations; rewritten in place on a
 * terminal, one line per step otherwise (logs, CI).
 */
export class Progress {
  private readonly started = performance.now();
  private readonly tty = process.stderr.isTTY === true;
  constructor(
    private readonly label: string,
    private readonly quiet = false,
  ) {}
  step(msg: string): void {
    if (this.quiet) return;
    const t = ((performance.now() - this.started) / 1000).toFixed(1);
    const line = `${this.label}: ${msg} (${t} s)`;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  done(): void {
    if (this.tty && !this.quiet) process.stderr.write('\n');
  }
}

/** README's exit status for bad input (1 is any other failure). */
const EXIT_BAD_INPUT = 2;

/**
 * Commander's own refusals (a missing, unknown or bad option, an unknown
 * command) exit as bad input does; help and version still exit 0. Set on a
 * program before its commands are added: they inherit it.
 */
export function usageErrorsAreBadInput<T extends Command>(program: T): T {
  program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_BAD_INPUT));
  return program;
}

/** Ends the command with a message that says what went wrong and what to do. */
export function fail(err: unknown): never {
  // An agent's own error code says more than "the agent failed".
  const code = err instanceof UpstreamError && err.upstreamCode ? err.upstreamCode : err instanceof HubshiftError ? err.code : 'error';
  process.stderr.write(`hubshift: ${errorMessage(err)}${code !== 'error' ? ` [${code}]` : ''}\n`);
  // Bad input is exit 2, whether this command or the service it asked found it.
  process.exit(code === 'invalid_input' ? EXIT_BAD_INPUT : 1);
}
