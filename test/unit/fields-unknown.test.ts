import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { fieldsUnknownTo, itemFieldsUnknownTo } from '../../src/core/errors.js';

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

  it("should name a list's items' unknown fields once each, under the list's name, within the same bounds", () => {
    expect(itemFieldsUnknownTo(schema, [{ name: 'a', gpuBytes: 1 }, { name: 'b', gpuBytes: 2, lanes: 1 }, { name: 'c' }], 'sessions')).toEqual(['sessions[].gpuBytes', 'sessions[].lanes']);
    expect(itemFieldsUnknownTo(schema, [{ name: 'a' }], 'sessions')).toEqual([]);
    for (const raw of [null, { name: 'a', x: 1 }, 'text']) expect(itemFieldsUnknownTo(schema, raw, 'sessions')).toEqual([]);
    const many = Array.from({ length: 100 }, (_, i) => ({ name: 'a', [`f${i}${'x'.repeat(100)}`]: i }));
    const named = itemFieldsUnknownTo(schema, many, 'sessions');
    expect(named).toHaveLength(20);
    expect(named.every((k) => k.length === 64 && k.startsWith('sessions[].f'))).toBe(true);
  });
});
