import { readdir, stat } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import type { FileDigest, MoveFile, MoveMode } from '../core/checkpoint.js';
import { IntegrityError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { PageServerAddress } from '../criu/driver.js';
import { PAGE_IMAGE, SIDE_FILES_DIR } from '../images/checkpoint-writer.js';
import type { MoveStreamWriter } from '../images/move-stream.js';
import { pathExists } from '../util/fs.js';
import type { AgentContext } from './agent-context.js';

export interface MoveRequest {
  target: { url: string; token: string };
  mode: MoveMode;
  /** The scheduler's fencing token, passed on to the target. */
  fence?: number;
}

/** What a dump left to send: its image directory, side files, and the digests of pages already sent. */
export interface DumpToSend {
  images: string;
  side: string;
  session: Session;
  dumpSeconds: number;
  /** Stop-and-copy: page images were sent (and hashed) while criu wrote them. Unset: every file is sent now. */
  pageDigests?: Map<string, FileDigest>;
}

/**
 * After the dump: the images criu wrote besides the pages, and the side
 * files, sent whole; then the manifest with every file's digest (the pages'
 * were taken while they were sent). Returns the bytes the move carried.
 * `pageServer` (post-copy): where the target fetches the memory left out.
 */
export async function sendRest(ctx: AgentContext, out: MoveStreamWriter, d: DumpToSend, pageServer?: PageServerAddress): Promise<number> {
  const files: MoveFile[] = [];
  const add = async (name: string, path: string, pageDigest?: FileDigest): Promise<void> => {
    const st = await stat(path);
    if (pageDigest) {
      if (pageDigest.bytes !== st.size) throw new IntegrityError(`${name} is ${st.size} bytes but ${pageDigest.bytes} were sent while criu wrote it`);
      files.push({ name, ...pageDigest, mode: st.mode & 0o777 });
      return;
    }
    files.push({ name, ...(await out.file(name, path)), mode: st.mode & 0o777 });
  };
  for (const n of (await readdir(d.images)).sort()) {
    const page = d.pageDigests !== undefined && PAGE_IMAGE.test(n);
    const digest = page ? d.pageDigests?.get(n) : undefined;
    if (page && !digest) throw new IntegrityError(`criu wrote ${n} where the move did not follow it`);
    await add(`images/${n}`, join(d.images, n), digest);
  }
  const log = join(d.side, 'server.log');
  if (await pathExists(log)) await add(`${SIDE_FILES_DIR}/server.log`, log);
  await out.end({
    formatVersion: 2,
    session: { ...d.session, state: 'checkpointed', pid: null },
    criu: { version: ctx.criu.version, source: ctx.criu.source },
    kernel: release(),
    dumpSeconds: d.dumpSeconds,
    files,
    ...(pageServer ? { pageServer } : {}),
  });
  return files.reduce((a, f) => a + f.bytes, 0);
}

