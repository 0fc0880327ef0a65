import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { z } from 'zod';
import { InputError, describeZodIssue } from '../core/errors.js';
import { TraceEvent, TraceHeader, type Trace } from '../core/trace.js';

function issue(line: number, err: z.ZodError): InputError {
  return new InputError(`trace line ${line}: ${describeZodIssue(err, '(line)')}`);
}

/**
 * Builds a trace from its lines, refusing the first bad one by line number
 * and field: not JSON, a field missing or out of range, events out of time
 * order or outside the header's span, a usage or stop for a user whose
 * server is not running, a start for one whose server already is.
 */
export class TraceParser {
  private header: TraceHeader | null = null;
  private startMs = 0;
  private endMs = 0;
  private lastMs = -Infinity;
  private readonly running = new Set<string>();
  private readonly events: Trace['events'] = [];
  private line = 0;

  add(text: string): void {
    this.line++;
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new InputError(`trace line ${this.line}: not JSON (${text.slice(0, 60)}${text.length > 60 ? '...' : ''})`);
    }
    if (this.header === null) {
      const h = TraceHeader.safeParse(value);
      if (!h.success) throw issue(this.line, h.error);
      this.header = h.data;
      this.startMs = Date.parse(h.data.start);
      this.endMs = Date.parse(h.data.end);
      if (this.endMs <= this.startMs) throw new InputError(`trace line ${this.line}: end: must be after start`);
      return;
    }
    const e = TraceEvent.safeParse(value);
    if (!e.success) throw issue(this.line, e.error);
    const ev = e.data;
    const atMs = Date.parse(ev.at);
    if (atMs < this.lastMs) throw new InputError(`trace line ${this.line}: at: ${ev.at} is earlier than the line before (events must be in time order)`);
    if (atMs < this.startMs || atMs >= this.endMs) throw new InputError(`trace line ${this.line}: at: ${ev.at} is outside the trace's span [${this.header.start}, ${this.header.end})`);
    this.lastMs = atMs;
    if (ev.type === 'start') {
      if (this.running.has(ev.user)) throw new InputError(`trace line ${this.line}: user: ${ev.user}'s server is already running (a stop must come first)`);
      this.running.add(ev.user);
    } else {
      if (!this.running.has(ev.user)) throw new InputError(`trace line ${this.line}: user: ${ev.user} has no server running (a start must come first)`);
      if (ev.type === 'stop') this.running.delete(ev.user);
    }
    this.events.push({ ...ev, atMs });
  }

  finish(): Trace {
    if (this.header === null) throw new InputError('trace is empty: its first line must be the header ({"type":"header","version":1,...})');
    return { header: this.header, events: this.events };
  }
}

export function parseTrace(text: string): Trace {
  const p = new TraceParser();
  for (const line of text.split('\n')) p.add(line);
  return p.finish();
}

/** Reads a trace file line by line (gzip when it ends in .gz). */
export async function readTraceFile(path: string): Promise<Trace> {
  try {
    await stat(path);
  } catch {
    throw new InputError(`cannot read the trace ${path}: no such file`);
  }
  const raw = createReadStream(path);
  const lines = createInterface({ input: path.endsWith('.gz') ? raw.pipe(createGunzip()) : raw, crlfDelay: Infinity });
  const p = new TraceParser();
  for await (const line of lines) p.add(line);
  return p.finish();
}
