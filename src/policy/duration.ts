import { z } from 'zod';

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "2h", "1d" (or a number of seconds) as milliseconds. */
const MESSAGE = 'a duration like 90s, 30m, 2h or 1d, or a number of seconds';

export const Duration = z.union(
  [
    z.number().nonnegative().transform((s) => s * 1_000),
    z
      .string()
      .regex(/^\d+(\.\d+)?(s|m|h|d)$/)
      .transform((v) => Number(v.slice(0, -1)) * (UNITS[v.slice(-1)] as number)),
  ],
  { error: MESSAGE },
);
