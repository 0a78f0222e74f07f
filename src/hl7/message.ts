import { HL7Message } from 'hl7v2';
import { type MshHeader, readHeader } from './header.js';

/** One segment of a parsed message, with field access by HL7 position (1-based). */
export interface Segment {
  type: string;
  /** Field `n`, repetition `rep` (0-based), component `comp` (1-based), unescaped; '' when absent. */
  get(n: number, comp?: number, rep?: number): string;
  /** Every repetition of field `n` as an array of its unescaped components. */
  repetitions(n: number): string[][];
}

export interface ParsedMessage {
  header: MshHeader;
  segments: Segment[];
  first(type: string): Segment | undefined;
}

export class Hl7ParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Hl7ParseError';
  }
}

export function unescapeHl7(s: string, fieldSep: string, enc: string): string {
  const esc = enc[2] ?? '\\';
  if (!s.includes(esc)) return s;
  const [comp = '^', rep = '~', , sub = '&'] = enc.split('');
  const re = new RegExp(`${escapeRegex(esc)}([^${escapeRegex(esc)}]*)${escapeRegex(esc)}`, 'g');
  return s.replace(re, (whole, code: string) => {
    switch (code) {
      case 'F':
        return fieldSep;
      case 'S':
        return comp;
      case 'R':
        return rep;
      case 'E':
        return esc;
      case 'T':
        return sub;
      case '.br':
        return '\n';
      default:
        if (/^X[0-9A-Fa-f]+$/.test(code)) return Buffer.from(code.slice(1), 'hex').toString('latin1');
        return whole;
    }
  });
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
}

function wrap(type: string, line: string, fieldSep: string, enc: string): Segment {
  const compSep = enc[0] ?? '^';
  const repSep = enc[1] ?? '~';
  const parts = line.split(fieldSep);
  // MSH-1 is the separator itself, so MSH field n sits one place earlier than in other segments.
  const raw = (n: number): string => {
    if (type === 'MSH') return n === 1 ? fieldSep : (parts[n - 1] ?? '');
    return parts[n] ?? '';
  };
  const repetitions = (n: number): string[][] => {
    const text = raw(n);
    if (text === '') return [];
    const reps = type === 'MSH' && n <= 2 ? [text] : text.split(repSep);
    return reps.map((r) => r.split(compSep).map((c) => unescapeHl7(c, fieldSep, enc)));
  };
  return {
    type,
    get: (n, comp = 1, rep = 0) => (repetitions(n)[rep]?.[comp - 1] ?? '').trim(),
    repetitions,
  };
}

/** Parses HL7 v2 text (CR segment ends) with hl7v2; throws Hl7ParseError with the reason. */
export function parseMessage(text: string): ParsedMessage {
  const header = readHeader(text);
  if (!header) throw new Hl7ParseError('no MSH segment at the start of the message');
  let msg: HL7Message;
  try {
    msg = HL7Message.parse(text);
  } catch (e) {
    throw new Hl7ParseError(`not a parsable HL7 v2 message: ${(e as Error).message}`);
  }
  const enc = header.encodingChars.padEnd(4, ' ');
  // hl7v2 checks the structure; values are read from the original text because hl7v2 re-serializes
  // typed fields lossily (a DTM like 20261127101400 comes back without its seconds).
  const lines = text.slice(text.indexOf('MSH')).split('\r');
  if (lines.length !== msg.segments.length) throw new Hl7ParseError('segment count differs between parser and text');
  const segments = lines.map((line, i) => {
    const type = msg.segments[i]?.segmentType ?? '';
    if (!/^[A-Z][A-Z0-9]{2}$/.test(type) || !line.startsWith(type)) {
      throw new Hl7ParseError(`invalid segment id "${line.slice(0, 8)}" at segment ${i + 1}`);
    }
    return wrap(type, line, header.fieldSep, enc);
  });
  return { header, segments, first: (type) => segments.find((s) => s.type === type) };
}
