import { describe, expect, it } from 'vitest';
import { argsFromStdinInput } from '../../src/criu/waiting-criu.js';

describe("criu --args-from-stdin's input", () => {
  it('should write the arguments, an empty entry, then the environment and the descriptors in order, each NUL-terminated', () => {
    expect(argsFromStdinInput(['dump', '-t', '42'], { A: '1', B: 'x=y' }, ['/proc/1/fd/7', '/run/netns/n'])).toBe('dump\0-t\x0042\0\0A=1\0B=x=y\0@3:/proc/1/fd/7\0@4:/run/netns/n\0');
    expect(argsFromStdinInput(['--version'])).toBe('--version\0\0');
  });

  it('should refuse what the format cannot carry: an empty argument, or a NUL in any entry', () => {
    expect(argsFromStdinInput(['dump', '', '-t'])).toBeUndefined();
    expect(argsFromStdinInput(['du\0mp'])).toBeUndefined();
    expect(argsFromStdinInput(['dump'], { A: 'a\0b' })).toBeUndefined();
    expect(argsFromStdinInput(['dump'], {}, ['/a\0b'])).toBeUndefined();
  });
});
