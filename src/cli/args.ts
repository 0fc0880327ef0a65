import { InputError } from '../core/errors.js';

/** Option parsers shared by the commands: each refuses bad input naming the option. */

export function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InputError(`port ${value} is not a number from 0 to 65535`);
  return n;
}

export function positiveNumber(option: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InputError(`${option} ${value} is not a positive number`);
    return n;
  };
}

export function nonNegative(option: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new InputError(`${option} ${value} is not a non-negative number`);
    return n;
  };
}

export function fraction(option: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || n > 1) throw new InputError(`${option} ${value} is not a fraction from 0 to 1`);
    return n;
  };
}

export function integer(option: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InputError(`${option} ${value} is not a whole number of at least ${min}`);
    return n;
  };
}

/** Closes a long-running service on SIGINT/SIGTERM, then exits 0; a second signal exits at once. */
export function stopOnSignal(close: () => Promise<void>): void {
  const stop = (): void => {
    process.once('SIGINT', () => process.exit(1));
    process.once('SIGTERM', () => process.exit(1));
    void close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
