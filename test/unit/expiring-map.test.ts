import { describe, expect, it } from 'vitest';
import { ExpiringMap } from '../../src/util/expiring-map.js';

describe('an expiring, bounded map', () => {
  it('should answer an entry until its own time-to-live has passed, and null as a value', () => {
    let t = 0;
    const m = new ExpiringMap<string, string | null>(10, () => t);
    m.set('a', 'A', 100);
    m.set('b', null, 10);
    t = 9;
    expect(m.get('b')).toBeNull();
    t = 10;
    expect(m.get('b')).toBeUndefined();
    expect(m.get('a')).toBe('A');
    t = 100;
    expect(m.get('a')).toBeUndefined();
    m.set('a', 'A2', 5);
    expect(m.get('a')).toBe('A2');
    m.delete('a');
    expect(m.get('a')).toBeUndefined();
  });

  it('should drop expired entries past its bound, and start over when all are fresh', () => {
    let t = 0;
    const m = new ExpiringMap<number, number>(4, () => t);
    for (let i = 0; i < 4; i++) m.set(i, i, 10);
    t = 20;
    m.set(4, 4, 10);
    expect(m.size).toBe(1);
    expect(m.get(4)).toBe(4);
    for (let i = 5; i < 9; i++) m.set(i, i, 10);
    expect(m.size).toBe(0);
  });
});
