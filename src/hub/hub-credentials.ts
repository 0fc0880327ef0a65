import type { IncomingHttpHeaders } from 'node:http';

/**
 * The hub tokens a request to a single-user server carries, as that server
 * would find them: `Authorization: token T` (or `Bearer T`), `?token=T`, and
 * the cookie the server set after the hub's OAuth (`jupyterhub-user-NAME`,
 * named after its OAuth client). That cookie is a tornado signed value: its
 * signature needs the server's secret, which the gateway does not have, but
 * the token inside is plain base64, and the hub itself says whether it is
 * valid and whose it is (hub-identity.ts). Nothing here trusts a token.
 */
export function hubTokensOf(headers: IncomingHttpHeaders, url: string): string[] {
  const found: string[] = [];
  const auth = /^(?:token|bearer)\s+(\S+)$/i.exec(headers.authorization ?? '');
  if (auth) found.push(auth[1]!);
  const query = url.indexOf('?');
  if (query >= 0) {
    const t = new URLSearchParams(url.slice(query + 1)).get('token');
    if (t) found.push(t);
  }
  for (const [name, value] of cookiesOf(headers.cookie)) {
    if (!name.startsWith(OAUTH_COOKIE_PREFIX)) continue;
    const t = signedValue(value);
    if (t) found.push(t);
  }
  // A handful at most: each unknown one costs the hub a lookup.
  return [...new Set(found.filter((t) => TOKEN.test(t)))].slice(0, 4);
}

/** JupyterHub's single-user servers name their OAuth client, and so their cookie, `jupyterhub-user-NAME[-SERVER]`. */
export const OAUTH_COOKIE_PREFIX = 'jupyterhub-user-';

/** What a hub token looks like (hex, or URL-safe base64), bounded. */
const TOKEN = /^[A-Za-z0-9_-]{8,256}$/;

/** Name and value pairs of a Cookie header, values unquoted as Python's http.cookies quotes them. */
export function cookiesOf(header: string | undefined): [string, string][] {
  if (!header) return [];
  return header
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part.includes('='))
    .map((part) => {
      const at = part.indexOf('=');
      return [part.slice(0, at).trim(), unquote(part.slice(at + 1).trim())];
    });
}

function unquote(v: string): string {
  if (v.length < 2 || !v.startsWith('"') || !v.endsWith('"')) return v;
  return v.slice(1, -1).replace(/\\(?:([0-7]{3})|(.))/g, (_m, octal: string | undefined, ch: string | undefined) => (octal ? String.fromCharCode(parseInt(octal, 8)) : (ch ?? '')));
}

/**
 * The value inside a tornado signed cookie, version 2
 * (`2|1:KEY|LEN:TIME|LEN:NAME|LEN:BASE64|SIGNATURE`, each field its length,
 * a colon and itself) or version 1 (`BASE64|TIME|SIGNATURE`); null for
 * anything else. The signature is not checked (see hubTokensOf).
 */
export function signedValue(cookie: string): string | null {
  let b64: string | undefined;
  if (cookie.startsWith('2|')) {
    const fields: string[] = [];
    let rest = cookie.slice(2);
    for (let i = 0; i < 4; i++) {
      const m = /^(\d{1,5}):/.exec(rest);
      if (!m) return null;
      const len = Number(m[1]);
      const start = m[0].length;
      if (rest.length < start + len + 1 || rest[start + len] !== '|') return null;
      fields.push(rest.slice(start, start + len));
      rest = rest.slice(start + len + 1);
    }
    b64 = fields[3];
  } else {
    const parts = cookie.split('|');
    if (parts.length === 3) b64 = parts[0];
  }
  if (!b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  return Buffer.from(b64, 'base64').toString('latin1');
}
