import { CheckpointId } from '../core/checkpoint.js';

/**
 * A dump's work directory is named for what the dump serves, then its
 * checkpoint id: so that an agent restarted after one of them died can tell
 * from the name alone what a dump left (removeAbandonedDumps, and the
 * settling of a session cut off in a checkpoint).
 */
export const DUMP_DIR_PREFIX = { checkpoint: '', stopAndCopy: 'm-', postCopy: 'p-' } as const;
export type DumpKind = keyof typeof DUMP_DIR_PREFIX;

/** The work directory's name for a dump of this kind and checkpoint id. */
export function dumpDirName(kind: DumpKind, checkpoint: string): string {
  return `${DUMP_DIR_PREFIX[kind]}${checkpoint}`;
}

// Longest prefix first: the checkpoint's is empty.
const KINDS_BY_PREFIX = (Object.keys(DUMP_DIR_PREFIX) as DumpKind[]).sort((a, b) => DUMP_DIR_PREFIX[b].length - DUMP_DIR_PREFIX[a].length);

/** The kind of dump a work directory's name says it holds, or null when it names no dump. */
export function dumpKindOf(name: string): DumpKind | null {
  return KINDS_BY_PREFIX.find((k) => name.startsWith(DUMP_DIR_PREFIX[k]) && CheckpointId.safeParse(name.slice(DUMP_DIR_PREFIX[k].length)).success) ?? null;
}

/**
 * Whether a dump of this kind, its agent dead, is abandoned: its criu may be
 * ended and its work directory removed. A checkpoint's and a stop-and-copy
 * move's are: each commits only after criu is done, so nothing else uses
 * them. A post-copy source's is not: its target may run the session
 * already, and its criu serve the memory.
 */
export function abandonedWithItsAgent(kind: DumpKind | null): boolean {
  return kind === 'checkpoint' || kind === 'stopAndCopy';
}
