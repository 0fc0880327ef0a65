import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import { criuExecutable, type CriuBinary } from '../criu/binary.js';
import { nativeHasherInstalled, pieceHasherPath } from '../images/native-hashing.js';
import { ResidentFiles, commandPath, filesOfExecutables } from '../util/resident-files.js';

/**
 * Commands a checkpoint or a move runs beside criu, on its way: `ip` names
 * and unnames a session's namespace while criu dumps, `nsenter` announces a
 * moved session's address.
 */
const COMMANDS_BESIDE_CRIU = ['ip', 'nsenter'];

/**
 * Holds criu, the commands beside it and the restore's piece hasher in
 * memory for as long as the agent runs (util/resident-files.ts says what it
 * saves). Never throws: without it they are read from disk whenever the
 * page cache has let them go, which is only slower; the reason is logged.
 */
export async function keepToolsResident(criu: CriuBinary, log: Logger): Promise<ResidentFiles | undefined> {
  try {
    const executables = [criuExecutable(criu), ...COMMANDS_BESIDE_CRIU.map((c) => commandPath(c)).filter((p): p is string => p !== null)];
    if (nativeHasherInstalled()) executables.push(pieceHasherPath());
    const files = await filesOfExecutables(executables);
    const resident = await ResidentFiles.start(files);
    const { locked, errors } = resident.report;
    if (errors.length > 0) log.warn({ errors, lockedBytes: locked }, 'some of criu and the commands around it could not be kept in memory: they are read from disk when the page cache has let them go');
    else log.debug({ files: files.length, lockedBytes: locked }, 'criu and the commands around it kept in memory');
    return resident;
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'criu and the commands around it are not kept in memory: they are read from disk when the page cache has let them go (criu took 16-25 ms instead of 11-17 to start so, here)');
    return undefined;
  }
}
