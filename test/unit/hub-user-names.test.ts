import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { UserName } from '../../src/core/session.js';
import { hubUserName } from '../../src/hub/hub-user-names.js';
import { run } from '../../src/util/exec.js';
import { PYTHON } from '../../src/util/proc.js';

const SPAWNER_DIR = join(import.meta.dirname, '../../infra/jupyterhub');

/** The spawner's own function (infra/jupyterhub/hubshift_spawner.py), run by the hub's Python, for each name. */
async function hubshiftNames(names: readonly string[]): Promise<string[]> {
  const script = 'import json, sys\nfrom hubshift_spawner import hubshift_user_name\nprint(json.dumps([hubshift_user_name(n) for n in json.load(sys.stdin)]))';
  const r = await run(PYTHON, ['-c', script], { input: JSON.stringify(names), env: { ...process.env, PYTHONPATH: SPAWNER_DIR }, timeoutMs: 30_000 });
  return z.array(z.string()).length(names.length).parse(JSON.parse(r.stdout));
}

describe('hub user names as hubshift user names', () => {
  it('should keep a name hubshift takes as it is, and escape the others readably', async () => {
    const names = ['ann', 'ann.lee_2', 'b-2', 'x'.repeat(64), 'ann@lab.org', 'Ann', 'zoë', '-lead', '.hidden', 'a--b', ''];
    expect(await hubshiftNames(names)).toEqual(['ann', 'ann.lee_2', 'b-2', 'x'.repeat(64), 'u--ann-40lab.org', 'u---41nn', 'u--zo-c3-ab', 'u---2dlead', 'u--.hidden', 'u--a-2d-2db', 'u--']);
  });

  it('should give every hub user a name of its own that hubshift accepts, whatever the hub user is called', async () => {
    const long = 'a'.repeat(70);
    const names = [
      // A hub user named like another's escaped name gets a name of its own.
      'ann@lab.org',
      'u--ann-40lab.org',
      'u--ann-40lab.org'.replace('u--', 'u-'),
      // Too long to escape whole: the digest tells them apart, whatever they share.
      long,
      `${long}b`,
      `${long}@`,
      `${'é'.repeat(40)}`,
      `${'é'.repeat(40)}e`,
      'x'.repeat(65),
      // Escapes are whole: the hex of "@" is not the letters "40".
      'ann40',
      'ann-40',
      'Ann@Lab.org',
      'ann@lab.org ',
      'ann/../root',
    ];
    const got = await hubshiftNames(names);
    for (const [i, name] of got.entries()) expect(UserName.safeParse(name).success, `${JSON.stringify(names[i])} became ${JSON.stringify(name)}`).toBe(true);
    expect(new Set(got).size).toBe(names.length);
    expect(got[3]).toMatch(/^h--a{36}-[0-9a-f]{24}$/);
    expect(got[6]).toMatch(/^h--(?:-c3-a9)+-[0-9a-f]{24}$/);
    expect(got[13]).toBe('u--ann-2f..-2froot');
  });

  it('should read an escaped name back as the hub user named it, for the dashboard, and leave every other name as it is', async () => {
    const names = ['ann', 'ann@lab.org', 'Ann', 'zoë', '-lead', 'a--b', 'u--ann-40lab.org', 'ann/../root', 'x'.repeat(70)];
    const got = await hubshiftNames(names);
    expect(got.map(hubUserName)).toEqual([...names.slice(0, 8), got[8]]);
    expect(got[8]).toMatch(/^h--/);
    // Not what the spawner writes: shown as they are.
    for (const odd of ['u---ff', 'u---c3', 'u--A', 'u---4', 'x--y']) expect(hubUserName(odd)).toBe(odd);
  });
});
