import { readFileSync } from 'node:fs';

export const THP_ENABLED_FILE = '/sys/kernel/mm/transparent_hugepage/enabled';

/** The kernel's transparent huge page mode, the bracketed word of `file` ("always", "madvise", "never"); null where unknown. */
export function transparentHugePages(file = THP_ENABLED_FILE): string | null {
  try {
    return /\[(\w+)\]/.exec(readFileSync(file, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * Why criu's lazy restores (post-copy moves, lazy restores from the store)
 * must not run here, or null. With transparent huge pages "always", on
 * this VM's kernel (6.18), the lazy-pages daemon of a post-copy move
 * retried one range forever, and another moved kernel segfaulted; likely
 * (not proven) a page restored eagerly into a mapping also served lazily
 * faults in a huge page around it, whose lazy pages can then not be filled.
 * Read at each decision, as an operator may change the mode at any time.
 */
export function lazyRestoreBlocker(file = THP_ENABLED_FILE): string | null {
  if (transparentHugePages(file) !== 'always') return null;
  return `transparent huge pages are "always" on this host (${file}), with which criu's lazy restore leaves pages it cannot fill; set it to madvise (echo madvise > ${file}) for post-copy moves and lazy restores`;
}
