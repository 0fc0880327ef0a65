import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { probeArgsFromStdin, probeCriu, probeHugePageFill, probeLazyStack, probePostCopy } from '../../src/criu/probe.js';
import { CRIU_PRIVATE_PREFIX, loadSelectedCriu } from '../../src/criu/select.js';
import { privatePrefixArgv } from '../../src/criu/binary.js';

describe('the criu probe', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'hubshift-probe-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('should pass the criu that setup selected: a TCP connection carries data after restore', async () => {
    const bin = await loadSelectedCriu();
    expect(await probeCriu(bin, work)).toEqual({ ok: true, seconds: expect.any(Number) });
  });

  it('should find out whether post-copy works here, and say why not from criu\'s own log', async () => {
    const bin = await loadSelectedCriu();
    const r = await probePostCopy(bin, work);
    // Setup recorded the same finding; on this kernel it fails in the dump's page server.
    expect(r.ok).toBe(bin.postCopy?.ok);
    if (!r.ok) {
      expect(r.reason).toMatch(/\(logs in .*criu-postcopy-/);
      expect(r.reason?.replace(/ \(logs in .*\)$/, '')).toBe(bin.postCopy?.reason?.replace(/ \(logs in .*\)$/, ''));
    }
  });

  it("should find that hubshift's build fills memory advised into huge pages in huge pages at restore, and stock criu not", async () => {
    const bin = await loadSelectedCriu();
    // Setup builds criu with the patch and prefers it (README, "Which criu").
    expect(bin.source, "setup did not choose hubshift's build of criu: its log says why (infra/setup/build-criu.sh; the source tarball is pinned to criu 4.2.1 in Debian's pool)").toBe('built');
    expect(await probeHugePageFill(bin, work)).toEqual({ ok: true, reason: null });
    expect(bin.hugePageFill).toBe(true);
    // The same source without the patch, where setup installed it: the restore fills 4 KiB at a time.
    if (existsSync(privatePrefixArgv(CRIU_PRIVATE_PREFIX).at(-1) as string)) {
      const stock = await probeHugePageFill({ ...bin, argv: privatePrefixArgv(CRIU_PRIVATE_PREFIX), source: 'private' }, work);
      expect(stock.ok).toBe(false);
      expect(stock.reason).toMatch(/4 KiB at a time/);
    }
  });

  it("should find that hubshift's build keeps lazy the memory of a process whose thread's stack pointer is page-aligned", async () => {
    const bin = await loadSelectedCriu();
    expect(bin.source).toBe('built');
    // Without lazy-stack-page.patch: "a lazy dump wrote 8581120 bytes of a process ... into its images" (by hand, 2026-12-03).
    expect(await probeLazyStack(bin, work)).toEqual({ ok: true, reason: null });
    expect(bin.lazyStackExact).toBe(true);
  });

  it("should find that hubshift's build takes its arguments on stdin, and stock criu not", async () => {
    const bin = await loadSelectedCriu();
    expect(bin.source).toBe('built');
    expect(await probeArgsFromStdin(bin)).toEqual({ ok: true, reason: null });
    expect(bin.argsFromStdin).toBe(true);
    // Debian's criu, which setup installs beside it.
    if (existsSync('/usr/sbin/criu')) {
      const stock = await probeArgsFromStdin({ ...bin, argv: ['/usr/sbin/criu'], source: 'system' });
      expect(stock).toEqual({ ok: false, reason: expect.stringMatching(/^criu --args-from-stdin exited 1: .*unrecognized option '--args-from-stdin'/) });
    }
  });

  it('should fail a criu that cannot dump, with the reason', async () => {
    const bin = { ...(await loadSelectedCriu()), argv: ['/bin/false'] };
    const r = await probeCriu(bin, work);
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.reason).toMatch(/criu dump failed/);
  });
});
