/**
 * A seeded, deterministic HL7 v2 / MLLP fuzzer, shared by bench/fuzz.ts (100,000 cases) and
 * test/integration/hl7-fuzz.test.ts (2,000 in CI).
 *
 * A case is a function of (seed, index) alone: fuzzCase(seed, i) gives the same bytes, split into the same writes,
 * in any run and on any machine, so a failure is reproduced with `--seed S --only i`. Each case starts from one
 * of the messages in fixtures/hl7 (made unique: MSH-10 and the placer numbers carry the case index) and applies
 * one or more mutations: byte flips, truncation, duplicated/removed/swapped segments, wrong or missing MSH-1/MSH-2,
 * huge fields, deep repetition and escape sequences, stray CR/LF, non-UTF-8 bytes, MSH-18 character sets, and bad
 * MLLP framing (missing end block, nested start blocks, zero-length frames, garbage, writes split across packets).
 *
 * Two runners check the cases: runPure() through the in-process path the listener uses (MllpDecoder, then
 * decodeMessageBytes, evaluateMessage and buildAck), and MllpLanes over a real MLLP listener, where a client-side
 * MllpDecoder mirrors the server's so that each answer can be matched to the message it answers.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setImmediate as tick } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { jobIdFor } from '../../src/domain/job.js';
import { ackCodeFor, ackPlan, buildAck } from '../../src/hl7/ack.js';
import { type MshHeader, readHeader } from '../../src/hl7/header.js';
import { CR, encodeFrame, type FrameEvent, FS, MllpDecoder, VT } from '../../src/hl7/mllp-framing.js';
import { decodeMessageBytes } from '../../src/hl7/text.js';
import { type Evaluation, evaluateMessage } from '../../src/orders/evaluate.js';
import type { Mappings } from '../../src/orders/mappings.js';
import { MllpClient } from './hl7.js';

// ---------------------------------------------------------------- deterministic randomness

export class Rng {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  /** mulberry32 */
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  token(n: number): string {
    const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }
}

// ---------------------------------------------------------------- base messages

/** The messages in fixtures/hl7/*.hl7 (one or more per file, LF or CR ends), as CR-separated text. */
export function loadFixtureMessages(dir = new URL('../../fixtures/hl7/', import.meta.url)): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith('.hl7')) continue;
    const text = readFileSync(new URL(name, dir), 'utf8');
    for (const m of text.split(/\r?\n(?=MSH)|\r(?=MSH)/)) {
      const t = m.replace(/\r\n|\n/g, '\r').replace(/\r+$/, '');
      if (t.startsWith('MSH')) out.push(t);
    }
  }
  if (out.length === 0) throw new Error(`no HL7 messages in ${dir}`);
  return out;
}

/** `text` with MSH-10 = `controlId` and every ORC/OBR placer and filler number (field 2, 3 component 1) suffixed. */
export function personalize(text: string, controlId: string, suffix: string): string {
  return text
    .split('\r')
    .map((seg) => {
      const f = seg.split('|');
      if (f[0] === 'MSH') {
        while (f.length < 10) f.push('');
        f[9] = controlId;
      } else if (f[0] === 'ORC' || f[0] === 'OBR') {
        for (const n of [2, 3]) {
          const v = f[n];
          if (!v) continue;
          const c = v.split('^');
          if (c[0]) c[0] = `${c[0]}${suffix}`;
          f[n] = c.join('^');
        }
      }
      return f.join('|');
    })
    .join('\r');
}

// ---------------------------------------------------------------- cases

export interface FuzzCase {
  index: number;
  /** Mutations applied, joined with "+". */
  label: string;
  /** The unmutated (personalized) message. */
  base: string;
  /** What goes on the wire, as the separate writes to make (a split case has several). */
  writes: Buffer[];
  /**
   * The mutation keeps the message's meaning: the server must see exactly one message, evaluated as the base is
   * (same accept/reject, same orders). A wrong NAK shows here.
   */
  preserves: boolean;
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const DELIMS = [...'|^~\\&'].map((c) => c.charCodeAt(0));

export type ByteGen = (r: Rng) => number;
/** Byte generators for insertBytes, replaceBytes and randomBytes. */
export const bytes = {
  any: (r: Rng) => r.int(0, 255),
  /** Any byte except the two that change MLLP framing. */
  inFrame: (r: Rng) => {
    const b = r.int(0, 255);
    return b === VT || b === FS ? b + 1 : b;
  },
  control: (r: Rng) => r.pick([0, 1, 7, 8, 9, 10, 12, 13, 27, 0x7f, 0x1f]),
  delimiter: (r: Rng) => r.pick([...DELIMS, CR, 0x0a]),
  high: (r: Rng) => r.int(0x80, 0xff),
  printable: (r: Rng) => r.int(0x20, 0x7e),
} satisfies Record<string, ByteGen>;

export function insertBytes(r: Rng, b: Buffer, count: number, gen: ByteGen): Buffer {
  const parts: Buffer[] = [];
  const at = Array.from({ length: count }, () => r.int(0, b.length)).sort((x, y) => x - y);
  let last = 0;
  for (const p of at) {
    parts.push(b.subarray(last, p), Buffer.from([gen(r)]));
    last = p;
  }
  parts.push(b.subarray(last));
  return Buffer.concat(parts);
}

export function replaceBytes(r: Rng, b: Buffer, count: number, gen: ByteGen): Buffer {
  const out = Buffer.from(b);
  if (out.length === 0) return out;
  for (let k = 0; k < count; k++) out[r.int(0, out.length - 1)] = gen(r);
  return out;
}

function flipBits(r: Rng, b: Buffer, count: number): Buffer {
  const out = Buffer.from(b);
  if (out.length === 0) return out;
  for (let k = 0; k < count; k++) {
    const i = r.int(0, out.length - 1);
    out[i] = (out[i] as number) ^ (1 << r.int(0, 7));
  }
  return out;
}

export const randomBytes = (r: Rng, n: number, gen: ByteGen = bytes.any) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = gen(r);
  return b;
};

/** `text` with field `n` of its first `segment` segment set to `value` (MSH-n counted as HL7 does). */
export function setField(text: string, segment: string, n: number, value: string): string {
  const segs = text.split('\r');
  const i = segs.findIndex((s) => s.startsWith(segment));
  if (i === -1) return text;
  const parts = (segs[i] as string).split('|');
  // MSH-n is parts[n - 1]: MSH-1 is the separator itself.
  const at = segment === 'MSH' ? n - 1 : n;
  while (parts.length <= at) parts.push('');
  parts[at] = value;
  segs[i] = parts.join('|');
  return segs.join('\r');
}

/** A field worth filling with something odd: one a rule reads (ids, codes, names) or any. */
function someField(r: Rng): [string, number] {
  return r.pick<[string, number]>([
    ['MSH', 3],
    ['MSH', 4],
    ['MSH', 9],
    ['MSH', 10],
    ['MSH', 12],
    ['MSH', 15],
    ['MSH', 18],
    ['PID', 3],
    ['PID', 5],
    ['ORC', 1],
    ['ORC', 2],
    ['ORC', 3],
    ['OBR', 2],
    ['OBR', 4],
    ['OBR', 18],
    ['OBR', r.int(1, 50)],
    ['PID', r.int(1, 30)],
  ]);
}

function filler(r: Rng, size: number): string {
  const v = r.int(0, 3);
  if (v === 0) return 'A'.repeat(size);
  if (v === 1) return 'CT '.repeat(Math.ceil(size / 3)).slice(0, size);
  if (v === 2) return randomBytes(r, size, bytes.printable).toString('latin1');
  return randomBytes(r, size, bytes.printable)
    .toString('latin1')
    .replace(/[|^~\\&]/g, 'x');
}

function escapeSoup(r: Rng, n: number): string {
  const pieces = [
    '\\F\\',
    '\\S\\',
    '\\T\\',
    '\\R\\',
    '\\E\\',
    '\\.br\\',
    '\\H\\',
    '\\N\\',
    '\\X0D0A\\',
    '\\X\\',
    '\\XZZ\\',
    '\\X0\\',
    '\\C2842\\',
    '\\M2442\\',
    '\\Zfoo\\',
    '\\.sp5\\',
    '\\.in-3\\',
    '\\',
    '\\\\',
    '\\E',
    'x',
  ];
  let s = '';
  for (let i = 0; i < n; i++) s += r.pick(pieces);
  return s;
}

export type Body = { body: Buffer; preserves?: boolean };
type Wire = { writes: Buffer[]; preserves?: boolean };
type BodyMutation = (r: Rng, text: string, body: Buffer) => Body;
type WireMutation = (r: Rng, body: Buffer) => Wire;

/** Two segments (maybe the same one) swapped. */
export function swapSegments(r: Rng, t: string): Body {
  const segs = t.split('\r');
  const i = r.int(0, segs.length - 1);
  const j = r.int(0, segs.length - 1);
  [segs[i], segs[j]] = [segs[j] as string, segs[i] as string];
  return { body: utf8(segs.join('\r')) };
}

/** An invalid UTF-8 sequence inserted at a random place. */
export function insertInvalidUtf8(r: Rng, b: Buffer): Body {
  const bad = r.pick([[0xc3, 0x28], [0xff, 0xfe], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc0, 0xaf], [0xe2, 0x82], [0xef, 0xbf, 0xbf], [0x80]]);
  const at = r.int(0, b.length);
  return { body: Buffer.concat([b.subarray(0, at), Buffer.from(bad), b.subarray(at)]) };
}

/** Mutations of the message bytes (framed afterwards), weighted. */
const BODY: [string, number, BodyMutation][] = [
  ['valid', 6, (_r, _t, b) => ({ body: b, preserves: true })],
  ['lf-endings', 2, (r, t) => ({ body: utf8(t.replaceAll('\r', r.pick(['\n', '\r\n']))), preserves: true })],
  [
    'blank-lines',
    2,
    (r, t) => ({
      body: utf8(`${r.pick(['', '\r', '\n', '\r\n'])}${t.replaceAll('\r', () => r.pick(['\r', '\r\r', '\r\n\r\n', '\n\n']))}\r\n`),
      preserves: true,
    }),
  ],
  ['utf8-bom', 1, (_r, t) => ({ body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), utf8(t)]), preserves: true })],
  ['stray-cr-lf', 6, (r, _t, b) => ({ body: insertBytes(r, b, r.int(1, 4), (q) => q.pick([CR, 0x0a])) })],
  ['byte-flip', 8, (r, _t, b) => ({ body: flipBits(r, b, r.int(1, 8)) })],
  ['truncate', 6, (r, _t, b) => ({ body: b.subarray(0, r.int(0, Math.max(0, b.length - 1))) })],
  ['insert-bytes', 4, (r, _t, b) => ({ body: insertBytes(r, b, r.int(1, 8), bytes.inFrame) })],
  ['replace-bytes', 4, (r, _t, b) => ({ body: replaceBytes(r, b, r.int(1, 8), bytes.inFrame) })],
  ['control-bytes', 3, (r, _t, b) => ({ body: insertBytes(r, b, r.int(1, 6), bytes.control) })],
  ['delimiter-bytes', 4, (r, _t, b) => ({ body: replaceBytes(r, b, r.int(1, 6), bytes.delimiter) })],
  ['high-bytes', 3, (r, _t, b) => ({ body: insertBytes(r, b, r.int(1, 6), bytes.high) })],
  [
    'remove-segment',
    4,
    (r, t) => {
      const segs = t.split('\r');
      if (r.chance(0.5)) segs.splice(r.int(0, segs.length - 1), 1);
      else {
        const drop = r.pick(['MSH', 'PID', 'ORC', 'OBR', 'PV1', 'IPC', 'TQ1']);
        return { body: utf8(segs.filter((s) => !s.startsWith(drop)).join('\r')) };
      }
      return { body: utf8(segs.join('\r')) };
    },
  ],
  [
    'duplicate-segment',
    4,
    (r, t) => {
      const segs = t.split('\r');
      const i = r.int(0, segs.length - 1);
      const times = r.chance(0.1) ? r.int(100, 2500) : r.int(1, 5);
      segs.splice(i, 0, ...Array.from({ length: times }, () => segs[i] as string));
      return { body: utf8(segs.join('\r')) };
    },
  ],
  ['swap-segments', 3, swapSegments],
  [
    'msh-1',
    4,
    (r, t) => {
      const v = r.int(0, 5);
      if (v === 0) return { body: utf8(`MSH${t.slice(4)}`) }; // MSH-1 missing: MSH^~\&|…
      if (v === 1) return { body: utf8(`MSH${r.pick(['#', '!', '%', '*'])}${t.slice(4)}`) }; // says # but the fields use |
      if (v === 2) return { body: utf8(`MSH${r.pick(['A', '7', ' ', '\t', '\x00', 'é'])}${t.slice(4)}`) }; // not usable as a separator
      if (v === 3) return { body: utf8(`MSH${r.pick(['^', '~', '\\', '&'])}${t.slice(4)}`) }; // an encoding character
      if (v === 4) return { body: utf8(r.pick(['MSH', 'MSH|', 'MSH|^~\\&', 'MSH||'])) };
      return { body: utf8(`MS${t.slice(3)}`) };
    },
  ],
  [
    'msh-2',
    4,
    (r, t) => ({
      body: utf8(setField(t, 'MSH', 2, r.pick(['', '^', '^~', '^~\\', '&&&&', '^~\\&#', '~^&\\', '\\\\\\\\', '^^^^', '|', 'ABCD', '^~\\&^~\\&', ' ^~\\&']))),
    }),
  ],
  [
    'consistent-delimiters',
    2,
    (r, t, b) => {
      // The message's own delimiters (MSH-1, MSH-2) swapped for another set everywhere: the same message in other
      // encoding characters. None of the new ones occurs in the fixtures' values.
      if (!t.startsWith('MSH')) return { body: b };
      const old = t.slice(3, 8);
      const set = r.pick(['#@*%$', '|!~\\&', '|^*\\&', '!^~\\&']);
      if (new Set(old).size !== 5) return { body: b };
      const map = new Map([...old].map((c, i) => [c, set[i] as string]));
      return { body: utf8([...t].map((c) => map.get(c) ?? c).join('')), preserves: true };
    },
  ],
  [
    'huge-field',
    3,
    (r, t) => {
      const size = r.chance(0.04) ? r.int(1_000_000, 5_000_000) : r.int(1_000, 200_000);
      const [seg, n] = someField(r);
      return { body: utf8(setField(t, seg, n, filler(r, size))) };
    },
  ],
  [
    'deep-repetition',
    3,
    (r, t) => {
      const [seg, n] = someField(r);
      const sep = r.pick(['~', '^', '&', '~^&', '^~']);
      const unit = r.pick(['', 'X', '71250', 'A^B', '\\E\\']);
      return { body: utf8(setField(t, seg, n, Array.from({ length: r.int(100, 60_000) }, () => unit).join(sep))) };
    },
  ],
  [
    'escape-sequences',
    4,
    (r, t) => {
      const [seg, n] = r.chance(0.5)
        ? r.pick<[string, number]>([
            ['PID', 5],
            ['OBR', 4],
            ['ORC', 2],
            ['PID', 3],
          ])
        : someField(r);
      const count = r.chance(0.1) ? r.int(5_000, 40_000) : r.int(1, 40);
      return { body: utf8(setField(t, seg, n, escapeSoup(r, count))) };
    },
  ],
  ['empty-field', 3, (r, t) => ({ body: utf8(setField(t, ...someField(r), '')) })],
  [
    'odd-field',
    3,
    (r, t) => ({
      body: utf8(
        setField(t, ...someField(r), r.pick(['""', ' ', '^', '~', '&', '\\', 'X'.repeat(r.int(1, 300)), r.token(r.int(1, 12)), '0', '-1', 'NaN', '2.5.1'])),
      ),
    }),
  ],
  [
    'msh-fields',
    4,
    (r, t) => {
      const n = r.pick([9, 10, 11, 12, 15, 16]);
      const values: Record<number, string[]> = {
        9: ['ORU^R01^ORU_R01', 'ADT^A01', 'ORM^O02', 'ACK', '', 'ORM', '^O01', 'orm^o01', 'OMI^O23', 'ORM^O01^ORM_O01^X^Y'],
        10: ['', ' ', 'A'.repeat(200), '\\F\\', 'ID^WITH^COMPONENTS'],
        11: ['X', '', 'PROD', 'D', 'T', 'P^T', 'p'],
        12: ['', '3.0', '2.9', '2', 'v2.5', '2.5.1.1', '2.10', '25', '2.0', '2.5^^', '2.3.1'],
        15: ['AL', 'NE', 'ER', 'SU', 'XX', ''],
        16: ['AL', 'NE', 'ER', 'SU', ''],
      };
      return { body: utf8(setField(t, 'MSH', n, r.pick(values[n] ?? ['']))) };
    },
  ],
  [
    'charset',
    4,
    (r, t) => {
      const cs = r.pick(['8859/1', 'UNICODE UTF-8', 'ASCII', '8859/15', 'ISO IR87', 'UNICODE', 'GB 18030-2000', 'garbage', '8859/1~UNICODE UTF-8', '']);
      const named = setField(t, 'MSH', 18, cs).replace(/(\rPID(?:\|[^|\r]*){4}\|)[^|\r]*/, '$1MÜLLER^JOSÉ^Ñ');
      const enc = r.pick(['utf8', 'latin1', 'utf16le'] as const);
      return { body: Buffer.from(named, enc) };
    },
  ],
  ['invalid-utf8', 3, (r, _t, b) => insertInvalidUtf8(r, b)],
  ['utf16', 1, (r, t) => ({ body: r.chance(0.5) ? Buffer.from(t, 'utf16le') : Buffer.from(t, 'utf16le').swap16() })],
  ['junk-before-msh', 2, (r, _t, b) => ({ body: Buffer.concat([randomBytes(r, r.chance(0.5) ? r.int(1, 60) : r.int(60, 400), bytes.printable), b]) })],
  [
    'many-orders',
    2,
    (r, t) => {
      const groups = Array.from({ length: r.int(2, r.chance(0.1) ? 1200 : 40) }, (_, k) => {
        const p = `PL${r.token(8)}`;
        return `ORC|${r.pick(['NW', 'NW', 'CA', 'XO', 'SC'])}|${p}^EPIC|F-${p}^RIS||SC\rOBR|${k + 2}|${p}^EPIC|F-${p}^RIS|${r.pick(['71250^CT THORAX WO CONTRAST^C4', '70450^CT HEAD^C4', '^CT CHEST^'])}`;
      });
      return { body: utf8([t, ...groups].join('\r')) };
    },
  ],
  ['random-bytes', 2, (r) => ({ body: randomBytes(r, r.int(0, 4096), bytes.inFrame) })],
  [
    'random-hl7ish',
    2,
    (r) => {
      const segs = Array.from({ length: r.int(1, 10) }, () =>
        [r.pick(['MSH', 'PID', 'ORC', 'OBR', 'ZZZ', 'msh', 'MS', 'OBX', 'IPC']), ...Array.from({ length: r.int(0, 20) }, () => r.token(r.int(0, 6)))].join(
          r.pick(['|', '|', '^', '~']),
        ),
      );
      return { body: utf8(segs.join('\r')) };
    },
  ],
  ['whitespace', 1, (r) => ({ body: utf8(r.pick(['', '\r', '\r\n', '   ', '\n\n\n', '\t', 'MSH'])) })],
];

/** Mutations of the framing; they get the mutated body and decide the writes themselves. */
const WIRE: [string, number, WireMutation][] = [
  ['framed', 30, (_r, b) => ({ writes: [encodeFrame(b)], preserves: true })],
  ['split-writes', 8, (r, b) => ({ writes: split(r, encodeFrame(b), r.int(2, 24)), preserves: true })],
  // The first 400 bytes of the message, framed, one byte per write.
  ['byte-writes', 1, (_r, b) => ({ writes: [...encodeFrame(b.subarray(0, 400))].map((x) => Buffer.from([x])) })],
  ['zero-length-frame', 2, (r, b) => ({ writes: r.chance(0.5) ? [Buffer.from([VT, FS, CR])] : [Buffer.from([VT, FS, CR, VT, FS, CR]), encodeFrame(b)] })],
  ['missing-end-block', 2, (r, b) => ({ writes: [Buffer.concat([Buffer.from([VT]), b, r.chance(0.5) ? Buffer.from([CR]) : Buffer.alloc(0)])] })],
  ['missing-start-block', 2, (_r, b) => ({ writes: [Buffer.concat([b, Buffer.from([FS, CR])])] })],
  [
    'nested-start-block',
    2,
    (r, b) => {
      const at = r.int(0, b.length);
      return { writes: [Buffer.concat([Buffer.from([VT]), b.subarray(0, at), Buffer.from([VT]), b.subarray(at), Buffer.from([FS, CR])])] };
    },
  ],
  [
    'embedded-end-block',
    2,
    (r, b) => {
      const at = r.int(0, b.length);
      return { writes: [encodeFrame(Buffer.concat([b.subarray(0, at), Buffer.from(r.chance(0.5) ? [FS] : [FS, CR]), b.subarray(at)]))] };
    },
  ],
  ['no-cr-after-fs', 1, (_r, b) => ({ writes: [Buffer.concat([Buffer.from([VT]), b, Buffer.from([FS])])] })],
  ['lf-after-fs', 1, (_r, b) => ({ writes: [Buffer.concat([Buffer.from([VT]), b, Buffer.from([FS, 0x0a])])] })],
  ['two-frames-one-write', 2, (r, b) => ({ writes: [Buffer.concat([encodeFrame(b), r.chance(0.5) ? Buffer.from('\r\n') : Buffer.alloc(0), encodeFrame(b)])] })],
  [
    'garbage-around',
    2,
    (r, b) => ({ writes: [Buffer.concat([randomBytes(r, r.int(1, 300), bytes.inFrame), encodeFrame(b), randomBytes(r, r.int(0, 300), bytes.inFrame)])] }),
  ],
  ['unframed-garbage', 1, (r) => ({ writes: [randomBytes(r, r.int(1, 2048))] })],
  [
    'split-at-fs-cr',
    2,
    (_r, b) => {
      const f = encodeFrame(b);
      return { writes: [f.subarray(0, f.length - 1), f.subarray(f.length - 1)] };
    },
  ],
];

function split(r: Rng, b: Buffer, parts: number): Buffer[] {
  if (b.length < 2) return [b];
  const cuts = [...new Set(Array.from({ length: parts - 1 }, () => r.int(1, b.length - 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let last = 0;
  for (const c of cuts) {
    out.push(b.subarray(last, c));
    last = c;
  }
  out.push(b.subarray(last));
  return out;
}

function weighted<T extends [string, number, unknown]>(r: Rng, list: readonly T[]): T {
  const total = list.reduce((s, [, w]) => s + w, 0);
  let roll = r.next() * total;
  for (const m of list) {
    roll -= m[1];
    if (roll < 0) return m;
  }
  return list[0] as T;
}

const caseRng = (seed: number, index: number) => new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);

/** The base message of case `index`: a fixture message with MSH-10 and placer numbers unique to the case. */
function baseOf(r: Rng, seed: number, index: number, fixtures: readonly string[]): string {
  const tag = `${(seed >>> 0).toString(36).toUpperCase()}-${index}`;
  return personalize(r.pick(fixtures), `FZ${tag}`, `-${tag}`);
}

/** Case `index` of the run seeded `seed`: a function of the two alone. */
export function fuzzCase(seed: number, index: number, fixtures: readonly string[]): FuzzCase {
  const r = caseRng(seed, index);
  const base = baseOf(r, seed, index, fixtures);
  const labels: string[] = [];
  let body: Buffer = utf8(base);
  let text = base;
  let preserves = true;
  for (let k = r.chance(0.2) ? r.int(2, 3) : 1; k > 0; k--) {
    const [name, , mutate] = weighted(r, BODY);
    const out = mutate(r, text, body);
    if (name !== 'valid') labels.push(name);
    body = out.body;
    preserves &&= out.preserves === true;
    // UTF-8 so that a later text mutation re-encodes the bytes unchanged (a BOM stays a BOM); bytes that are not
    // UTF-8 come back as U+FFFD, which only a mutation that already changed the meaning produces.
    text = body.toString('utf8');
  }
  const [wname, , frame] = weighted(r, WIRE);
  const wire = frame(r, body);
  if (wname !== 'framed') labels.push(wname);
  const writes = wire.writes.length > 1 || wname !== 'framed' || !r.chance(0.15) ? wire.writes : split(r, Buffer.concat(wire.writes), r.int(2, 6));
  return { index, label: labels.join('+') || 'valid', base, writes, preserves: preserves && wire.preserves === true };
}

/** A valid fixture message, made unique, framed and written whole: the baseline the fuzz rate is set beside. */
export function baselineCase(seed: number, index: number, fixtures: readonly string[]): FuzzCase {
  const base = baseOf(caseRng(seed, index), seed, index, fixtures);
  return { index, label: 'baseline', base, writes: [encodeFrame(base)], preserves: true };
}

// ---------------------------------------------------------------- the in-process path

/** What a message means for its answer, evaluated as the gateway does before any I/O. */
export interface Expectation {
  controlId: string;
  enhanced: boolean;
  /** The ACK code the evaluation alone gives ('accept' may still become a reject: a cancel of an unknown order). */
  mayAccept: boolean;
  mayReject: boolean;
  /** An ACK is certain / impossible (MSH-15 NE, ER or SU can suppress it). */
  mustAck: boolean;
  noAck: boolean;
  /** A stable summary of the evaluation, to compare a meaning-preserving mutation with its base. */
  summary: string;
  /** The evaluator caught an exception it did not expect ("unexpected parse failure"): a bug behind an AR. */
  internal: string | null;
}

function summarize(ev: Evaluation): string {
  if (ev.kind === 'reject') return `reject:${ev.error.kind}`;
  return `orders:${ev.orders.map((o) => `${jobIdFor(o.order.sender, o.order.placerOrderNumber)}/${o.action}/${o.chestCt.chestCt}`).join(',')}`;
}

/** `text`: the frame's bytes already decoded (decodeMessageBytes), when the caller has them. */
export function expectationFor(event: FrameEvent, mappings: Mappings, text?: string): Expectation {
  if (event.type === 'oversized') {
    const header = readHeader(text ?? decodeMessageBytes(event.head));
    const send = ackPlan(header, false).send;
    return {
      controlId: header?.controlId ?? '',
      enhanced: ackPlan(header, false).enhanced,
      mayAccept: false,
      mayReject: true,
      mustAck: send,
      noAck: !send,
      summary: 'oversized',
      internal: null,
    };
  }
  const data = event.type === 'message' ? event.data : Buffer.alloc(0);
  const ev = evaluateMessage(text ?? decodeMessageBytes(data), mappings);
  const header = ev.header;
  const chest = ev.kind === 'orders' ? ev.orders.filter((o) => o.chestCt.chestCt) : [];
  const mayAccept = ev.kind === 'orders';
  // A cancel or change of an order this gateway never received is rejected by the intake's plan step.
  const mayReject = ev.kind === 'reject' || chest.some((o) => o.action === 'cancel' || o.action === 'update');
  const sends = [...(mayAccept ? [true] : []), ...(mayReject ? [false] : [])].map((ok) => ackPlan(header, ok).send);
  const internal = ev.kind === 'reject' && ev.error.reason.startsWith('unexpected parse failure') ? ev.error.reason : null;
  return {
    controlId: header?.controlId ?? '',
    enhanced: ackPlan(header, true).enhanced,
    mayAccept,
    mayReject,
    mustAck: sends.every(Boolean),
    noAck: sends.every((s) => !s),
    summary: summarize(ev),
    internal,
  };
}

/** The ACK-code-or-status tally key of one answer. */
export type Answer = 'AA' | 'AE' | 'AR' | 'CA' | 'CE' | 'CR' | 'silent' | 'closed' | 'timeout' | 'none';

export interface PureResult {
  /** Messages (and oversized frames) the decoder produced. */
  messages: number;
  answers: Answer[];
  problems: string[];
  ms: number;
}

/** The messages and oversized frames a fresh MllpDecoder makes of `writes`. */
export function framesOf(writes: Buffer[], maxBytes: number, decoder = new MllpDecoder(maxBytes)): FrameEvent[] {
  return writes.flatMap((w) => decoder.push(w)).filter((e) => e.type !== 'garbage');
}

const APP = { appName: 'CTGATE', facilityName: 'RADIOLOGY' };

/**
 * One case through the in-process path: frames decoded from the writes, each message decoded, evaluated and
 * answered with buildAck, the ACK read back. Throws only if the code under test throws.
 */
export function runPure(c: FuzzCase, mappings: Mappings, maxBytes: number, baseSummary?: string): PureResult {
  const started = performance.now();
  const problems: string[] = [];
  const answers: Answer[] = [];
  const frames = framesOf(c.writes, maxBytes);
  const summaries: string[] = [];
  for (const f of frames) {
    const text = decodeMessageBytes(f.type === 'oversized' ? f.head : f.type === 'message' ? f.data : Buffer.alloc(0));
    const e = expectationFor(f, mappings, text);
    summaries.push(e.summary);
    if (e.internal) problems.push(`evaluator caught an unexpected exception: ${e.internal}`);
    const header: MshHeader | null = readHeader(text);
    const ok = e.mayAccept;
    const plan = ackPlan(header, ok);
    const code = ackCodeFor(ok ? 'accept' : 'reject', plan.enhanced);
    if (!plan.send) {
      answers.push('silent');
      continue;
    }
    const ack = buildAck({ header, code, text: 'fuzz', ...APP, controlId: 'CG1', now: new Date(0) });
    const back = readHeader(ack);
    const msa = parseAck(ack);
    if (!back) problems.push('the ACK has no readable MSH');
    if (msa.code !== code) problems.push(`the ACK's MSA-1 reads "${msa.code}", not ${code}`);
    if (msa.msa2 !== e.controlId) problems.push(`the ACK's MSA-2 "${msa.msa2.slice(0, 40)}" does not echo MSH-10 "${e.controlId.slice(0, 40)}"`);
    answers.push(code);
  }
  if (c.preserves && baseSummary !== undefined && (summaries.length !== 1 || summaries[0] !== baseSummary)) {
    problems.push(`meaning-preserving mutation changed the evaluation: ${baseSummary} → ${summaries.join(' | ') || 'no message'}`);
  }
  return { messages: frames.length, answers, problems, ms: performance.now() - started };
}

/** The base's evaluation summary, for runPure's meaning-preserving check. */
export function baseSummaryOf(c: FuzzCase, mappings: Mappings): string {
  return expectationFor({ type: 'message', data: utf8(c.base) }, mappings).summary;
}

export function parseAck(ack: string): { code: string; msa2: string; text: string } {
  const fs = ack.charAt(3);
  const msa = ack.split('\r').find((l) => l.startsWith('MSA'));
  const f = msa?.split(fs) ?? [];
  return { code: f[1] ?? '', msa2: f[2] ?? '', text: f[3] ?? '' };
}

// ---------------------------------------------------------------- over a real MLLP listener

export interface LaneOptions {
  port: number;
  mappings: Mappings;
  maxBytes: number;
  /** A certain ACK not here by then is a hang. */
  ackTimeoutMs: number;
  /** How long to wait for an ACK MSH-15 may have suppressed. */
  maybeSilentMs: number;
}

export interface TcpTally {
  cases: number;
  messages: number;
  answers: Record<string, number>;
  hangs: string[];
  problems: string[];
  connections: number;
  slowestMs: number;
}

export const ACK_CODES = new Set(['AA', 'AE', 'AR', 'CA', 'CE', 'CR']);

/**
 * One sender connection that carries cases one after another (reconnecting when the server closes it), with a
 * client-side decoder mirroring the server's so that it knows which messages the server sees in each case.
 */
export class MllpLane {
  private conn: MllpClient | null = null;
  private mirror: MllpDecoder;

  constructor(
    private readonly o: LaneOptions,
    private readonly tally: TcpTally,
  ) {
    this.mirror = new MllpDecoder(o.maxBytes);
  }

  private async connection(): Promise<MllpClient> {
    if (!this.conn || this.conn.closed) {
      this.conn?.close();
      this.conn = await MllpClient.connect(this.o.port);
      this.tally.connections++;
      this.mirror = new MllpDecoder(this.o.maxBytes);
    }
    return this.conn;
  }

  private reset(): void {
    this.conn?.close();
    this.conn = null;
  }

  async run(c: FuzzCase): Promise<void> {
    const t = this.tally;
    t.cases++;
    const conn = await this.connection();
    const frames = framesOf(c.writes, this.o.maxBytes, this.mirror);
    for (const [k, w] of c.writes.entries()) {
      conn.write(w);
      if (k < c.writes.length - 1) await tick();
    }
    const count = (a: Answer) => {
      t.answers[a] = (t.answers[a] ?? 0) + 1;
    };
    for (const f of frames) {
      t.messages++;
      const e = expectationFor(f, this.o.mappings);
      if (e.noAck) {
        count('silent');
        continue;
      }
      const started = performance.now();
      try {
        const ack = await conn.nextAck(e.mustAck ? this.o.ackTimeoutMs : this.o.maybeSilentMs);
        t.slowestMs = Math.max(t.slowestMs, performance.now() - started);
        const a = parseAck(ack);
        count((ACK_CODES.has(a.code) ? a.code : 'none') as Answer);
        const where = `case ${c.index} (${c.label})`;
        const bad = (p: string) => t.problems.push(`${where}: ${p}`);
        if (!ACK_CODES.has(a.code)) bad(`MSA-1 "${a.code}" is not an ACK code`);
        if (a.code === 'AE' || a.code === 'CE') bad(`error ACK with Redis up: ${a.text}`);
        if ((a.code === 'AA' || a.code === 'CA') && !e.mayAccept) bad(`accepted, but the evaluator rejects it: ${a.text}`);
        if ((a.code === 'AR' || a.code === 'CR') && !e.mayReject) bad(`rejected, but the evaluator accepts it: ${a.text}`);
        if (ACK_CODES.has(a.code) && a.code.startsWith('C') !== e.enhanced) bad(`${a.code} in ${e.enhanced ? 'enhanced' : 'original'} acknowledgment mode`);
        if (a.msa2 !== e.controlId) bad(`MSA-2 "${a.msa2.slice(0, 40)}" does not echo MSH-10 "${e.controlId.slice(0, 40)}"`);
      } catch {
        if (conn.closed) {
          // A clean close is an allowed answer; the rest of this case's messages went unanswered with it.
          count('closed');
          this.reset();
          return;
        }
        if (!e.mustAck) {
          count('silent');
          // A late ACK must not be taken for the next message's.
          this.reset();
          return;
        }
        count('timeout');
        t.hangs.push(`case ${c.index} (${c.label}): no ACK within ${this.o.ackTimeoutMs} ms`);
        this.reset();
        return;
      }
    }
  }

  close(): void {
    this.reset();
  }
}

export function newTally(): TcpTally {
  return { cases: 0, messages: 0, answers: {}, hangs: [], problems: [], connections: 0, slowestMs: 0 };
}

/** Runs `cases` over `lanes` concurrent connections (case i on lane i % lanes, in order). */
export async function runOverMllp(cases: Iterable<FuzzCase>, lanes: number, o: LaneOptions, tally = newTally()): Promise<TcpTally> {
  const queues: FuzzCase[][] = Array.from({ length: lanes }, () => []);
  let i = 0;
  for (const c of cases) (queues[i++ % lanes] as FuzzCase[]).push(c);
  await Promise.all(
    queues.map(async (q) => {
      const lane = new MllpLane(o, tally);
      try {
        for (const c of q) await lane.run(c);
      } finally {
        lane.close();
      }
    }),
  );
  return tally;
}

/** Sends one valid chest-CT order on a fresh connection and returns its ACK code ('' if none came). */
export async function probeValidOrder(
  port: number,
  fixtures: readonly string[],
  tag: string,
  timeoutMs = 5000,
): Promise<{ code: string; msa2: string; text: string }> {
  const conn = await MllpClient.connect(port);
  try {
    const chest = fixtures.find((t) => t.includes('71250')) ?? (fixtures[0] as string);
    conn.send(personalize(chest, `PROBE-${tag}`, `-PROBE-${tag}`));
    return parseAck(await conn.nextAck(timeoutMs));
  } catch {
    return { code: '', msa2: '', text: 'no ACK' };
  } finally {
    conn.close();
  }
}

// ---------------------------------------------------------------- a watchdog for synchronous hangs

/**
 * A synchronous hang (an endless loop in the parser) stops the event loop, so no timer in this thread can see it.
 * The watchdog thread does: `beat(i)` before each case; when no beat comes for `ms`, it writes which case hung to
 * stderr and ends the process (SIGTERM, then SIGKILL).
 */
export function startWatchdog(ms: number): { beat(index: number): void; stop(): void } {
  const shared = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     const s = new Int32Array(workerData.buf); let last = -1, since = Date.now();
     setInterval(() => {
       const b = Atomics.load(s, 0);
       if (b !== last) { last = b; since = Date.now(); return; }
       if (Date.now() - since > workerData.ms) {
         require('node:fs').writeSync(2, 'HANG: case ' + Atomics.load(s, 1) + ' has run for over ' + workerData.ms + ' ms\\n');
         process.kill(process.pid, 'SIGTERM'); setTimeout(() => process.kill(process.pid, 'SIGKILL'), 1000);
       }
     }, 200);`,
    { eval: true, workerData: { buf: shared.buffer, ms } },
  );
  worker.unref();
  return {
    beat(index: number) {
      Atomics.add(shared, 0, 1);
      Atomics.store(shared, 1, index);
    },
    stop() {
      void worker.terminate();
    },
  };
}
