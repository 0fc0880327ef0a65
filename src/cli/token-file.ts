import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../core/errors.js';

export async function readTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new InputError(`cannot read token file ${path} (the agent writes one when it first starts with --token-file)`);
  }
  const token = text.trim();
  if (token.length < 16) throw new InputError(`token file ${path} holds fewer than 16 characters`);
  return token;
}

/** Reads the token, or creates the file with a new random one (owner-only) when it does not exist. */
export async function readOrCreateTokenFile(path: string): Promise<string> {
  if (existsSync(path)) return readTokenFile(path);
  const token = randomBytes(32).toString('hex');
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return token;
}
