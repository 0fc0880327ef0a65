/**
 * Hub users' own names read back from the hubshift user names the spawner
 * gave them (hubshift_user_name in infra/jupyterhub/hubshift_spawner.py),
 * for people to read: `u--ann-40lab.org` is `ann@lab.org`. Other names,
 * among them `h--` ones (cut and hashed, not reversible), are returned as
 * they are.
 */
const ESCAPED = /^u--((?:[a-z0-9._]|-[0-9a-f]{2})*)$/;

export function hubUserName(hubshiftUser: string): string {
  const m = ESCAPED.exec(hubshiftUser);
  if (!m) return hubshiftUser;
  const body = m[1]!;
  const bytes: number[] = [];
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '-') {
      bytes.push(parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(body.charCodeAt(i));
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    return hubshiftUser;
  }
}
