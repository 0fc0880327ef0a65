import { describe, expect, it } from 'vitest';
import { tokenMatches } from '../../src/api/bearer-auth.js';

describe('bearer token comparison', () => {
  it('should accept only the exact token', () => {
    expect(tokenMatches('abc123abc123abc123', 'abc123abc123abc123')).toBe(true);
    expect(tokenMatches('abc123abc123abc12', 'abc123abc123abc123')).toBe(false);
    expect(tokenMatches('abc123abc123abc1234', 'abc123abc123abc123')).toBe(false);
    expect(tokenMatches('', 'abc123abc123abc123')).toBe(false);
    expect(tokenMatches('Abc123abc123abc123', 'abc123abc123abc123')).toBe(false);
  });
});
