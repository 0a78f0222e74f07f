/**
 * HL7 v2 parse speed: hl7v2 (the project's parser), the project's parseMessage wrapper around it, and
 * simple-hl7, on the same messages in the same run. Not a test: it prints figures and exits 0 unless a parser
 * extracts the wrong values (then 1, since the timings would be meaningless).
 *
 *   node --import tsx bench/parse.ts [--iterations 20000] [--warmup 2000] [--rounds 3]
 *
 * Each timed call parses one message and reads OBR-4.1 and PID-3.1 from the result, so no parser is timed
 * doing less than what the gateway needs from it. Messages rotate through a pool of distinct variants built
 * at run time so that V8's split cache (which keys on identical internalized strings) cannot skew a result.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { HL7Message } from 'hl7v2';
import simpleHl7, { type Field as ShField, type Segment as ShSegment } from 'simple-hl7';
import { parseMessage } from '../src/hl7/message.js';
import { normalizeSegments } from '../src/hl7/text.js';

const { values: args } = parseArgs({
  options: {
    iterations: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
  },
});
const ITERATIONS = positiveInt(args.iterations, '--iterations');
const WARMUP = positiveInt(args.warmup, '--warmup');
const ROUNDS = positiveInt(args.rounds, '--rounds');
const POOL = 256;

function positiveInt(raw: string | undefined, flag: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: expected a positive integer, got ${raw}`);
  return n;
}

// ---------------------------------------------------------------- messages

interface Variant {
  text: string;
  obr4: string;
  pid3: string;
  segments: number;
}

interface BenchMessage {
  name: string;
  variants: Variant[];
}

const fixture = normalizeSegments(readFileSync(new URL('../fixtures/hl7/orm-chest-ct.hl7', import.meta.url), 'utf8'));

/** The fixture ORM with a distinct MSH-10, MRN and placer number per variant. */
function fixtureVariant(i: number): Variant {
  const text = fixture
    .replace('MSG00001', `MSG${100000 + i}`)
    .replace('MRN12345', `MRN${20000 + i}`)
    .replaceAll('PLC1001', `PLC${5000 + i}`);
  return { text, obr4: '71250', pid3: `MRN${20000 + i}`, segments: text.split('\r').length };
}

function header(i: number): string {
  return `MSH|^~\\&|EPIC|GENHOSP|CTGATE|RADIOLOGY|20261127101500||ORM^O01^ORM_O01|B${i}-${Math.floor(i * 7919) % 100000}|P|2.5.1`;
}

function answers(i: number, group: number, n: number): string[] {
  const out: string[] = [];
  for (let k = 1; k <= n; k++) {
    out.push(
      k % 3 === 0
        ? `OBX|${k}|NM|8302-2^Body height^LN||${170 + ((i + k) % 20)}|cm^centimeter^UCUM|||||F`
        : `OBX|${k}|ST|Q${group}${k}^Clinical question ${k}^L||Answer ${k} for order ${group}: smoker \\T\\ ${20 + (k % 30)} pack-years||||||F`,
    );
    out.push(`NTE|${k}|L|Comment ${k}: prior CT 2025-03-0${(k % 9) + 1}\\.br\\follow-up of 6 mm nodule, RUL \\S\\ see report`);
  }
  return out;
}

/** An ORM^O01 for one chest CT with 10 OBX + 10 NTE (ask-at-order-entry answers and comments). */
function ormWithAnswers(i: number): Variant {
  const placer = `P${i}X`;
  const segs = [
    header(i),
    `PID|1||MRN${30000 + i}^^^GENHOSP^MR||DOE^JANE^Q||19650412|F|||12 MAIN ST^^SPRINGFIELD^IL^62701||555-0100`,
    'PV1|1|O|CT1^^^GENHOSP||||77^ORDERING^OLIVIA',
    `ORC|NW|${placer}^EPIC|F-${placer}^RIS||SC||^^^20261127101000^^R||20261127101400|||77^ORDERING^OLIVIA`,
    `OBR|1|${placer}^EPIC|F-${placer}^RIS|71250^CT THORAX WO CONTRAST^C4|||20261127101000||||||||77^ORDERING^OLIVIA|||A-${placer}`,
    ...answers(i, 1, 10),
  ];
  return { text: segs.join('\r'), obr4: '71250', pid3: `MRN${30000 + i}`, segments: segs.length };
}

/** A large ORM: repeated PID-3, allergies, diagnoses and three ORC/OBR groups each with 10 OBX + 10 NTE. */
function largeOrm(i: number): Variant {
  const segs = [
    header(i),
    `PID|1||MRN${40000 + i}^^^GENHOSP^MR~${900000000 + i}^^^SSA^SS~E${i}^^^EPI^PI||DOE^JANE^Q~DOE^JANIE^^^^^A||19650412|F|||12 MAIN ST^^SPRINGFIELD^IL^62701~PO BOX 9^^SPRINGFIELD^IL^62705||555-0100~555-0199`,
    'PV1|1|O|CT1^^^GENHOSP||||77^ORDERING^OLIVIA|||||||||||V123^^^GENHOSP^VN',
    'AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives',
    'AL1|2|MA|I0002^Iodinated contrast^L|SV|Anaphylaxis \\T\\ shortness of breath',
    'DG1|1||R91.1^Solitary pulmonary nodule^I10||20261101|W',
    'DG1|2||Z87.891^Personal history of nicotine dependence^I10||20261101|W',
  ];
  for (let g = 1; g <= 3; g++) {
    const placer = `P${i}G${g}`;
    const code = g === 1 ? '71250^CT THORAX WO CONTRAST^C4' : g === 2 ? '71271^CT THORAX LOW DOSE SCREENING^C4' : '24627-2^CT Chest^LN';
    segs.push(
      `ORC|NW|${placer}^EPIC|F-${placer}^RIS||SC||^^^20261127101000^^R||20261127101400|||77^ORDERING^OLIVIA`,
      `OBR|${g}|${placer}^EPIC|F-${placer}^RIS|${code}|||20261127101000||||||||77^ORDERING^OLIVIA|||A-${placer}`,
      ...answers(i, g, 10),
    );
  }
  return { text: segs.join('\r'), obr4: '71250', pid3: `MRN${40000 + i}`, segments: segs.length };
}

const messages: BenchMessage[] = [
  { name: 'orm-chest-ct.hl7 (fixture)', variants: Array.from({ length: POOL }, (_, i) => fixtureVariant(i)) },
  { name: 'ORM + 10 OBX/10 NTE', variants: Array.from({ length: POOL }, (_, i) => ormWithAnswers(i)) },
  { name: 'large ORM, 3 orders x 20 OBX/NTE', variants: Array.from({ length: POOL }, (_, i) => largeOrm(i)) },
];

// ---------------------------------------------------------------- parsers

/** Parses one message and returns [OBR-4.1, PID-3.1, segment count including MSH]. */
interface Parser {
  name: string;
  run(text: string): [string, string, number];
}

const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));

/** simple-hl7 nests each repetition as a Field when a field repeats; this reads component `c` of the first. */
function shComponent(seg: ShSegment | undefined, field: number, c: number): string {
  const f = seg?.fields[field - 1];
  const first = f?.value[0];
  if (first === undefined) return '';
  const components = Array.isArray(first) ? first : ((first as ShField).value[0] as ShField['value'][number] | undefined);
  if (!Array.isArray(components)) return '';
  const v = components[c - 1]?.value[0];
  return Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
}

const shParser = new simpleHl7.Parser();

const parsers: Parser[] = [
  {
    name: 'hl7v2 HL7Message.parse',
    run: (text) => {
      const m = HL7Message.parse(text);
      return [str(m.getSegment('OBR')?.field(4).comp(1).getValue()), str(m.getSegment('PID')?.field(3).comp(1).getValue()), m.segments.length];
    },
  },
  {
    name: 'ctgate parseMessage (hl7v2)',
    run: (text) => {
      const m = parseMessage(text);
      return [m.first('OBR')?.get(4, 1) ?? '', m.first('PID')?.get(3, 1) ?? '', m.segments.length];
    },
  },
  {
    name: 'simple-hl7 Parser.parse',
    run: (text) => {
      const m = shParser.parse(text);
      // simple-hl7 keeps MSH apart in m.header.
      return [shComponent(m.getSegment('OBR'), 4, 1), shComponent(m.getSegment('PID'), 3, 1), m.segments.length + 1];
    },
  },
  {
    name: 'reference: String.split only',
    run: (text) => {
      const lines = text.split('\r').map((l) => l.split('|'));
      const obr = lines.find((f) => f[0] === 'OBR');
      const pid = lines.find((f) => f[0] === 'PID');
      const first = (v: string | undefined) => (v ?? '').split('~')[0]?.split('^')[0] ?? '';
      return [first(obr?.[4]), first(pid?.[3]), lines.length];
    },
  },
];

// ---------------------------------------------------------------- checks

let failed = false;
for (const msg of messages) {
  for (const p of parsers) {
    const bad: string[] = [];
    for (const v of msg.variants) {
      let got: [string, string, number];
      try {
        got = p.run(v.text);
      } catch (e) {
        bad.push(`threw ${(e as Error).message}`);
        break;
      }
      const [obr4, pid3, segs] = got;
      if (obr4 !== v.obr4 || pid3 !== v.pid3 || segs !== v.segments) {
        bad.push(`got OBR-4.1=${obr4} PID-3.1=${pid3} segments=${segs}, expected ${v.obr4} / ${v.pid3} / ${v.segments}`);
        break;
      }
    }
    if (bad.length) {
      failed = true;
      console.error(`CHECK FAILED: ${p.name} on ${msg.name}: ${bad[0]}`);
    }
  }
}
if (failed) {
  console.error('a parser did not extract the expected values; timings would be meaningless');
  process.exit(1);
}

// ---------------------------------------------------------------- timing

function timeOnce(p: Parser, variants: Variant[], n: number): number {
  let sink = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const r = p.run((variants[i % variants.length] as Variant).text);
    sink += r[0].length + r[1].length + r[2];
  }
  const ns = Number(process.hrtime.bigint() - t0);
  if (sink === 0) throw new Error(`${p.name} extracted nothing`);
  return ns;
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(
  `HL7 parse benchmark — node ${process.version}, ${os.cpus().length} x ${cpu}, load avg ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
console.log(
  `${ITERATIONS} parses per round after ${WARMUP} warm-up parses, ${ROUNDS} rounds; figures are the best (fastest) round, the one least disturbed by other work on a shared machine`,
);
console.log('each parse also reads OBR-4.1 and PID-3.1; all parsers checked to extract the same values (and segment count) on every message');

const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);

for (const msg of messages) {
  const sample = msg.variants[0] as Variant;
  console.log(`\n${msg.name}: ${sample.segments} segments, ${Buffer.byteLength(sample.text)} bytes — OBR-4.1=${sample.obr4} PID-3.1=${sample.pid3} [check OK]`);
  for (const p of parsers) timeOnce(p, msg.variants, WARMUP);
  const rounds = new Map<string, number[]>(parsers.map((p) => [p.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate the order each round so slow drift on a shared machine does not always hit the same parser.
    for (let k = 0; k < parsers.length; k++) {
      const p = parsers[(k + r) % parsers.length] as Parser;
      rounds.get(p.name)?.push(timeOnce(p, msg.variants, ITERATIONS) / ITERATIONS / 1000);
    }
  }
  const best = (xs: number[]) => Math.min(...xs);
  const base = best(rounds.get(parsers[0]?.name ?? '') ?? []);
  console.log(`  ${pad('parser', 30)} ${lpad('msgs/s', 10)} ${lpad('µs/msg', 9)} ${lpad('vs hl7v2', 9)}   rounds (µs/msg)`);
  for (const p of parsers) {
    const us = rounds.get(p.name) ?? [];
    const m = best(us);
    console.log(
      `  ${pad(p.name, 30)} ${lpad(Math.round(1e6 / m).toLocaleString('en-US'), 10)} ${lpad(m.toFixed(2), 9)} ${lpad(`${(base / m).toFixed(2)}x`, 9)}   ${us.map((u) => u.toFixed(2)).join(' / ')}`,
    );
  }
}
console.log(
  '\n"vs hl7v2" > 1 means faster than hl7v2 HL7Message.parse. simple-hl7 neither unescapes nor validates; hl7v2 does both (typed, dictionary-driven).',
);
