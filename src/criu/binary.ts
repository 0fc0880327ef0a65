import { z } from 'zod';

/**
 * A criu that can be run: `argv` is the command prefix (a plain path for the
 * system's criu; the private prefix's own loader, its library path and the
 * binary for an unpacked Debian-unstable criu).
 */
export const CriuBinary = z.object({
  argv: z.array(z.string()).min(1),
  version: z.string(),
  /** `built`: hubshift's build of criu with its patches (infra/setup/build-criu.sh, infra/setup/criu/*.patch). */
  source: z.enum(['system', 'private', 'env', 'built']),
  /** Where criu's plugins live for this binary (passed as --libdir). */
  libdir: z.string().nullable(),
  kernel: z.string(),
  probedAt: z.string(),
  /** Soft-dirty tracking, needed for pre-copy (`criu check --feature mem_dirty_track`). */
  memDirtyTrack: z.boolean(),
  /** userfaultfd for lazy restore (`criu check --feature uffd-noncoop`). */
  lazyPages: z.boolean(),
  /**
   * Whether lazy migration works end to end (a dump serving pages lazily to a
   * restore elsewhere), as probed at setup; why not when it does not.
   */
  postCopy: z.object({ ok: z.boolean(), reason: z.string().nullable() }).optional(),
  /**
   * Whether criu can lock a namespace's network with nftables
   * (`criu check --feature nftables`): one in-process transaction where the
   * iptables lock runs iptables-restore twice each way (0.07 s of every
   * restore here). Unset: not probed yet.
   */
  nftablesLock: z.boolean().optional(),
  /**
   * Whether a restore fills memory the process had advised into huge pages
   * (MADV_HUGEPAGE) in huge pages, as probed at setup: hubshift's build does,
   * stock criu fills everything 4 KiB at a time. Unset: not probed yet.
   */
  hugePageFill: z.boolean().optional(),
  /**
   * Whether a lazy dump keeps lazy the memory of a process one of whose
   * threads has its stack pointer page-aligned, as probed at setup:
   * hubshift's build does (lazy-stack-page.patch), stock criu 4.2.1 writes
   * the whole process into the images (src/criu/lazy-stack.ts). Unset: not
   * probed yet.
   */
  lazyStackExact: z.boolean().optional(),
  /**
   * Whether criu can be started ahead of need and given its arguments on
   * stdin (`--args-from-stdin`, hubshift's build: args-from-stdin.patch;
   * src/criu/waiting-criu.ts), as probed at setup. Unset: not probed yet.
   */
  argsFromStdin: z.boolean().optional(),
});
export type CriuBinary = z.infer<typeof CriuBinary>;

export function privatePrefixArgv(prefix: string): string[] {
  const lib = `${prefix}/usr/lib/x86_64-linux-gnu`;
  return [`${lib}/ld-linux-x86-64.so.2`, '--library-path', lib, `${prefix}/usr/sbin/criu`];
}

/** The criu executable itself: argv's last word (a private prefix's argv runs it through its own loader). */
export function criuExecutable(bin: Pick<CriuBinary, 'argv'>): string {
  return bin.argv.at(-1) as string;
}

export function criuCommand(bin: Pick<CriuBinary, 'argv'>, args: readonly string[]): { cmd: string; args: string[] } {
  const [cmd, ...rest] = bin.argv as [string, ...string[]];
  return { cmd, args: [...rest, ...args] };
}
