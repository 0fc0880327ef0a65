import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LAZY_HANDOVER_LINE, lazyTransferHandedOver } from '../../src/criu/lazy-pages.js';
import { useTempDir } from '../helpers/temp-dir.js';

// The end of a post-copy lazy-pages daemon's -v3 log, as criu 4.2.1 wrote it here.
const DONE = ['(00.645930) pr1-2 Read 7f0ffcc71000 2 pages', '(00.646024) pr1-2 Read 7ffc4b86e000 15 pages', '(00.649247) page-xfer: Disconnect from the page server', ''].join('\n');
const CUT = ['(00.645930) pr1-2 Read 7f0ffcc71000 2 pages', '(00.646024) pr1-2 Read 7ffc4b86e000 15 pages', ''].join('\n');
// A daemon whose page server had gone: it still tries to say it is done, and fails (as the probe's log showed here).
const GONE = [
  '(00.099197) Error (criu/page-xfer.c:1660): page-xfer: Remote side closed connection',
  '(00.099198) page-xfer: Disconnect from the page server',
  "(00.099204) Error (criu/page-xfer.c:1534): page-xfer: The page server doesn't answer: No such file or directory",
  '',
].join('\n');

describe('whether a post-copy daemon told the source it was done', () => {
  const tmp = useTempDir('hubshift-handover-');

  it("should take the handover line only as the log's last word", async () => {
    const dir = tmp();
    expect(DONE).toContain(LAZY_HANDOVER_LINE);
    await writeFile(join(dir, 'done.log'), 'x'.repeat(100_000) + '\n' + DONE);
    await writeFile(join(dir, 'cut.log'), CUT);
    await writeFile(join(dir, 'gone.log'), GONE);
    expect(await lazyTransferHandedOver(join(dir, 'done.log'))).toBe(true);
    expect(await lazyTransferHandedOver(join(dir, 'cut.log'))).toBe(false);
    expect(await lazyTransferHandedOver(join(dir, 'gone.log'))).toBe(false);
    // No log at all (a daemon that never started) is not a handover.
    expect(await lazyTransferHandedOver(join(dir, 'missing.log'))).toBe(false);
  });
});
