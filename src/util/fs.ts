import { stat } from 'node:fs/promises';

/** Whether anything exists at the path (false also when it cannot be looked at). */
export async function pathExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
