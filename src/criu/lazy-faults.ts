// What a lazy restore's processes asked the lazy-pages daemon for, read from the daemon's log.

/**
 * The pages each process faulted on, by pid in the images, in the order the
 * daemon was asked, each once: criu 4's `uffd: PID-FD: #PF at 0xADDR` lines,
 * which it writes at -v4 only. Pages its background copy brought are not
 * among them. At most `maxPerProcess` pages a process, the first asked.
 */
export function faultedPages(log: string, maxPerProcess: number): Map<number, number[]> {
  const seen = new Map<number, Set<number>>();
  for (const m of log.matchAll(/uffd: (\d+)-\d+: #PF at 0x([0-9a-f]+)/g)) {
    const pid = Number(m[1]);
    const page = Number.parseInt(m[2] as string, 16);
    let pages = seen.get(pid);
    if (!pages) seen.set(pid, (pages = new Set()));
    if (pages.size < maxPerProcess) pages.add(page);
  }
  return new Map([...seen].map(([pid, pages]) => [pid, [...pages]]));
}
