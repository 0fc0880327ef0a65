import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { fieldsUnknownTo } from '../../src/core/errors.js';

describe('the fields a stripping parse drops', () => {
  const schema = z.object({ name: z.string(), cpus: z.number().optional() });

  it('should name the top-level fields the schema does not, and none for a value that is not an object', () => {
    expect(fieldsUnknownTo(schema, { name: 'a', cpus: 2, networkGbps: 12.5, lanes: {} })).toEqual(['networkGbps', 'lanes']);
    expect(fieldsUnknownTo(schema, { name: 'a' })).toEqual([]);
    for (const raw of [null, 'text', 3, [1, 2]]) expect(fieldsUnknownTo(schema, raw)).toEqual([]);
  });

  it('should name at most a bounded number, each cut short: they are logged and sent back', () => {
    const many = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`f${i}${'x'.repeat(100)}`, i]));
    const named = fieldsUnknownTo(schema, many);
    expect(named).toHaveLength(20);
    expect(named.every((k) => k.length === 64)).toBe(true);
  });
});
