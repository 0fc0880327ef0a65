import { describe, expect, it } from 'vitest';
import { hubBaseOf } from '../../src/hub/gateway.js';
import { cookiesOf, hubTokensOf, signedValue } from '../../src/hub/hub-credentials.js';
import { mayAccess } from '../../src/hub/hub-identity.js';

// Made by tornado 6.2 (Debian's, which the hub runs): create_signed_value(secret, 'jupyterhub-user-ann', token),
// and the Set-Cookie header Python's http.cookies writes for it (quoted, since base64 padding is not a cookie character).
const TOKEN = '0123456789abcdef0123456789abcdef';
const SIGNED = '2|1:0|10:1700000000|19:jupyterhub-user-ann|44:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=|687c87806e035138e51071e345fdc3448b41463a7be0e14f7bdd6d02ea7e6245';

describe('the hub tokens a request carries', () => {
  it('should read a tornado signed cookie of either version, and nothing else', () => {
    expect(signedValue(SIGNED)).toBe(TOKEN);
    expect(signedValue(`${Buffer.from(TOKEN).toString('base64')}|1700000000|abcdef`)).toBe(TOKEN);
    // A length that runs past the field, a missing field, a value that is not base64.
    expect(signedValue('2|1:0|10:1700000000|19:jupyterhub-user-ann|99:MDEy|sig')).toBeNull();
    expect(signedValue('2|1:0|10:1700000000|sig')).toBeNull();
    expect(signedValue('2|1:0|10:1700000000|19:jupyterhub-user-ann|4:!!!!|sig')).toBeNull();
    expect(signedValue('plain')).toBeNull();
  });

  it('should unquote cookie values as Python quotes them', () => {
    expect(cookiesOf(`_xsrf=2|abc; jupyterhub-user-ann="${SIGNED}"; other="a\\073b\\"c"`)).toEqual([
      ['_xsrf', '2|abc'],
      ['jupyterhub-user-ann', SIGNED],
      ['other', 'a;b"c'],
    ]);
    expect(cookiesOf(undefined)).toEqual([]);
  });

  it('should find the token in the Authorization header, the query and the OAuth cookie, once each', () => {
    expect(hubTokensOf({ authorization: `token ${TOKEN}` }, '/user/ann/api/kernels')).toEqual([TOKEN]);
    expect(hubTokensOf({ authorization: `Bearer ${TOKEN}` }, '/user/ann/')).toEqual([TOKEN]);
    expect(hubTokensOf({}, `/user/ann/tree?token=${TOKEN}`)).toEqual([TOKEN]);
    expect(hubTokensOf({ cookie: `jupyterhub-user-ann="${SIGNED}"` }, '/user/ann/tree')).toEqual([TOKEN]);
    expect(hubTokensOf({ authorization: `token ${TOKEN}`, cookie: `jupyterhub-user-ann="${SIGNED}"` }, `/user/ann/?token=${'f'.repeat(32)}`)).toEqual([TOKEN, 'f'.repeat(32)]);
    // Other cookies, basic auth and tokens that are not tokens are not asked about.
    expect(hubTokensOf({ authorization: 'Basic YW5uOnB3', cookie: `_xsrf="${SIGNED}"` }, '/user/ann/?token=a%20b')).toEqual([]);
  });
});

describe('who may wake a server', () => {
  const route = { user: 'ann', server: 'lab' };
  it("should let the server's user, and tokens whose scopes cover the server", () => {
    expect(mayAccess({ name: 'ann', kind: 'user', scopes: [] }, route)).toBe(true);
    expect(mayAccess({ name: 'bob', kind: 'user', scopes: ['access:servers!user=bob'] }, route)).toBe(false);
    expect(mayAccess({ name: 'admin', kind: 'user', scopes: ['access:servers'] }, route)).toBe(true);
    expect(mayAccess({ name: 'bob', kind: 'user', scopes: ['access:servers!user=ann'] }, route)).toBe(true);
    expect(mayAccess({ name: 'bob', kind: 'user', scopes: ['access:servers!server=ann/lab'] }, route)).toBe(true);
    expect(mayAccess({ name: 'bob', kind: 'user', scopes: ['access:servers!server=ann/'] }, route)).toBe(false);
    // A service named like the user is not the user.
    expect(mayAccess({ name: 'ann', kind: 'service', scopes: [] }, route)).toBe(false);
  });

  it("should find the hub's base URL in a server's prefix", () => {
    expect(hubBaseOf({ prefix: '/user/ann/', server: '' })).toBe('/');
    expect(hubBaseOf({ prefix: '/user/ann/lab/', server: 'lab' })).toBe('/');
    expect(hubBaseOf({ prefix: '/jhub/user/ann/', server: '' })).toBe('/jhub/');
    expect(hubBaseOf({ prefix: '/a/b/user/ann/lab/', server: 'lab' })).toBe('/a/b/');
  });
});
