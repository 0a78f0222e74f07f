import { HL7Message } from 'hl7v2';
import { dictionaries, HL7Dictionary } from 'hl7v2-dictionary';
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

/** Where a parse failure was found; the reason names positions only, never the text there. */
export interface Hl7ErrorLocation {
  segment?: string;
  field?: number;
}

export class Hl7ParseError extends Error {
  constructor(
    message: string,
    readonly location: Hl7ErrorLocation = {},
  ) {
    super(message);
    this.name = 'Hl7ParseError';
  }
}

export interface ParseOptions {
  /**
   * Quote the offending text (its first few characters) in the reason. Off by default: a reason reaches the
   * ACK, the log and the dead-letter list, and a stray CR can put a patient's name where a segment id belongs.
   */
  quoteValues?: boolean;
}

/** The field of `line` (a segment's text) that its last character belongs to: where a stray CR after it cut it. */
function lastField(line: string, fieldSep: string): Hl7ErrorLocation {
  const type = line.slice(0, 3);
  if (!/^[A-Z][A-Z0-9]{2}$/.test(type)) return {};
  let seps = 0;
  for (const c of line) if (c === fieldSep) seps++;
  // MSH-1 is the field separator itself, so MSH's fields sit one place later than other segments'.
  return { segment: type, field: type === 'MSH' ? seps + 1 : seps };
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

/**
 * One segment read from its line of text. Fields are split on first use and each field is split and unescaped
 * once: extraction reads some of them several times.
 */
class TextSegment implements Segment {
  private parts: string[] | undefined;
  private readonly fields = new Map<number, string[][]>();

  constructor(
    readonly type: string,
    private readonly line: string,
    private readonly fieldSep: string,
    private readonly enc: string,
  ) {}

  /** Field `n` as sent. MSH-1 is the separator itself, so MSH field n sits one place earlier than in other segments. */
  private raw(n: number): string {
    this.parts ??= this.line.split(this.fieldSep);
    if (this.type === 'MSH') return n === 1 ? this.fieldSep : (this.parts[n - 1] ?? '');
    return this.parts[n] ?? '';
  }

  private field(n: number): string[][] {
    let reps = this.fields.get(n);
    if (!reps) {
      const text = this.raw(n);
      const compSep = this.enc[0] ?? '^';
      const repSep = this.enc[1] ?? '~';
      reps =
        text === ''
          ? []
          : (this.type === 'MSH' && n <= 2 ? [text] : text.split(repSep)).map((r) => r.split(compSep).map((c) => unescapeHl7(c, this.fieldSep, this.enc)));
      this.fields.set(n, reps);
    }
    return reps;
  }

  get(n: number, comp = 1, rep = 0): string {
    return (this.field(n)[rep]?.[comp - 1] ?? '').trim();
  }

  repetitions(n: number): string[][] {
    // Callers get their own arrays.
    return this.field(n).map((r) => r.slice());
  }
}

class TextMessage implements ParsedMessage {
  constructor(
    readonly header: MshHeader,
    readonly segments: Segment[],
  ) {}

  first(type: string): Segment | undefined {
    return this.segments.find((s) => s.type === type);
  }
}

/**
 * hl7v2 types each value by its dictionary on every parse (dates, numbers, composites split into sub-components),
 * but ctgate reads values from the text (see parseMessage) and parses non-strict, where a value that fails its
 * type is kept as text and never reported. The same dictionaries with every field as plain text give the same
 * segments and the same errors for a third less work. One exception: hl7v2 unescapes each sub-component apart,
 * and an escape such as \M1\ throws; split on a sub-component separator that cannot occur inside an escape
 * (not a letter, digit, _ or the escape character) the same escapes are found either way, otherwise the typed
 * parse decides (see hl7v2Parse).
 */
const UNTYPED_DICTIONARIES = (() => {
  const out: Record<string, HL7Dictionary> = {};
  for (const [version, dict] of Object.entries(dictionaries)) {
    out[version] = new HL7Dictionary({ version: dict.version, segments: {}, types: { ST: { desc: 'String Data' } }, messages: dict.messages });
  }
  return out;
})();

/**
 * Parser instances reused for every message: HL7Message.parse would build a new message with a default MSH
 * (a timestamp, a random control id) only for parse() to clear it. A parse runs synchronously to its end, so
 * no two parses share an instance at once.
 */
const untypedParser = new HL7Message(undefined, UNTYPED_DICTIONARIES);
const typedParser = new HL7Message();

function hl7v2Parse(text: string, encodingChars: string): HL7Message {
  const sub = encodingChars[3];
  const parser = sub === undefined || !/[\w\\]/.test(sub) ? untypedParser : typedParser;
  // hl7v2 probes MSH-18 with iconv, which throws (and catches) an Error when it is empty or unknown, on nearly
  // every message; capturing that stack trace was the costliest step of a parse. No stack is read here.
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    parser.parse(text);
    return parser;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * Parses HL7 v2 text (CR segment ends) with hl7v2; throws Hl7ParseError with the reason. `header` is
 * readHeader(text) when the caller already has it.
 */
export function parseMessage(text: string, header: MshHeader | null = readHeader(text), opts: ParseOptions = {}): ParsedMessage {
  if (!header) throw new Hl7ParseError('no MSH segment at the start of the message');
  let msg: HL7Message;
  try {
    msg = hl7v2Parse(text, header.encodingChars);
  } catch (e) {
    // hl7v2's messages can carry the text it failed on; by default only the line number is passed on.
    const line = (e as { line?: unknown }).line;
    const where = typeof line === 'number' ? ` at segment ${line}` : '';
    throw new Hl7ParseError(`not a parsable HL7 v2 message${where}${opts.quoteValues ? `: ${(e as Error).message.slice(0, 120)}` : ''}`);
  }
  const enc = header.encodingChars.padEnd(4, ' ');
  // hl7v2 checks the structure; values are read from the original text because hl7v2 re-serializes
  // typed fields lossily (a DTM like 20261127101400 comes back without its seconds).
  const lines = text.slice(text.indexOf('MSH')).split('\r');
  const parsed = msg.segments;
  if (lines.length !== parsed.length) throw new Hl7ParseError('segment count differs between parser and text');
  const segments = lines.map((line, i) => {
    const type = parsed[i]?.segmentType ?? '';
    if (!/^[A-Z][A-Z0-9]{2}$/.test(type) || !line.startsWith(type)) {
      const cut = lastField(lines[i - 1] ?? '', header.fieldSep);
      const hint = cut.segment ? `; a CR inside ${cut.segment}-${cut.field} would do this` : '';
      const quoted = opts.quoteValues ? ` (it starts "${line.slice(0, 8)}")` : '';
      throw new Hl7ParseError(`segment ${i + 1} has no valid segment id${quoted}${hint}`, cut);
    }
    return new TextSegment(type, line, header.fieldSep, enc);
  });
  return new TextMessage(header, segments);
}
