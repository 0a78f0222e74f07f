/**
 * ORU^R01 (HL7 v2.5.1) for one finished job: a pure function of the ResultContext, the control id and the time, so
 * the same inputs always give the same bytes and a resend is byte-for-byte the message first sent.
 *
 * Linking: ORC-2/OBR-2 echo the placer order number, ORC-3/OBR-3 the filler number, OBR-18 the accession number
 * (the radiology convention; ORU_R01 has no IPC segment in 2.5.1), and an OBX carries the StudyInstanceUID.
 * Results are preliminary (OBR-25 and every OBX-11 = P): no physician has confirmed them.
 */
import { createHash } from 'node:crypto';
import type { Code } from '../../dicom/code.js';
import type { Order } from '../../domain/order.js';
import { escapeHl7, hl7Timestamp } from '../../hl7/ack.js';
import { identityNote, type ResultContext, resultCategory, sharedAnalysisNote } from '../context.js';
import { IMPRESSION, OBSERVATION, SYSTEM, UNIT } from './codes.js';

export interface OruOptions {
  /** MSH-3/MSH-4 (namespace ids). */
  sendingApplication: string;
  sendingFacility: string;
  /** MSH-5/MSH-6; default: the application and facility that sent the order. */
  receivingApplication?: string;
  receivingFacility?: string;
  /** MSH-10; see oruControlId. */
  controlId: string;
  /** MSH-7. */
  now: Date;
  version: '2.5.1';
}

const FS = '|';
const ENC = '^~\\&';

/**
 * MSH-10 for a job's ORU: a hash of the job id (no PHI, at most 20 characters as 2.5.1 allows) and a sequence
 * number. The sender resends the same message (same id) after a lost ACK; a new sequence marks a deliberately new
 * message for the same job (a corrected result), still recognisable by its prefix.
 */
export function oruControlId(jobId: string, sequence = 1): string {
  if (!Number.isInteger(sequence) || sequence < 1 || sequence > 999) throw new RangeError(`ORU sequence must be 1..999, got ${sequence}`);
  const hash = createHash('sha256').update(jobId).digest('hex').slice(0, 14).toUpperCase();
  return `R${hash}-${sequence}`;
}

const esc = (s: string | undefined): string => escapeHl7(s ?? '', FS, ENC);

/** Components escaped and joined with ^, trailing empty components dropped. */
function comp(...parts: (string | undefined)[]): string {
  const out = parts.map(esc);
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  return out.join('^');
}

const coded = (c: Code): string => comp(c.value, c.meaning, c.scheme);

/**
 * A segment from already-encoded fields keyed by field number (MSH: from MSH-2, the encoding characters, since
 * MSH-1 is the separator itself); fields not given are empty, trailing empty fields dropped.
 */
function segment(id: string, fields: Record<number, string>): string {
  const first = id === 'MSH' ? 2 : 1;
  const last = Math.max(first - 1, ...Object.keys(fields).map(Number));
  const out: string[] = [];
  for (let n = first; n <= last; n++) out.push(fields[n] ?? '');
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  return [id, ...out].join(FS);
}

function isoToHl7(iso: string, what: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) throw new Error(`ORU: ${what} is not an ISO 8601 date-time: ${JSON.stringify(iso)}`);
  return hl7Timestamp(d);
}

/** DICOM DA + TM (local time, no zone) as an HL7 DTM; undefined when the study date is missing or malformed. */
function studyDateTime(date?: string, time?: string): string | undefined {
  if (!date || !/^\d{8}$/.test(date)) return undefined;
  const t = /^(\d{2,6})/.exec(time ?? '')?.[1] ?? '';
  return date + (t.length % 2 === 0 ? t : t.slice(0, -1));
}

const SEX: Record<NonNullable<Order['patient']['sex']>, string> = { male: 'M', female: 'F', other: 'O', unknown: 'U' };

function fmt(n: number | null | undefined, digits: number): string | undefined {
  return typeof n === 'number' && Number.isFinite(n) ? n.toFixed(digits) : undefined;
}

function provider(p: Order['orderingProvider']): string {
  return p ? comp(p.id, p.family, p.given) : '';
}

function conclusion(ctx: ResultContext): string {
  const a = ctx.analysis;
  const head = 'AI chest-CT screening (preliminary, not reviewed by a physician):';
  if (a.verdict === 'not-assessable') return `${head} study not assessable${a.reason ? `: ${a.reason}` : ''}.`;
  const prob = fmt(a.probability, 3);
  const probText = prob ? ` Probability ${prob} (threshold ${fmt(a.threshold, 3)}).` : '';
  const f = a.findings;
  const lesions =
    f && f.lesionCount > 0
      ? ` Lesions: ${fmt(f.lesionVolumeMl, 2)} mL, ${fmt(f.lungInvolvementPercent.total, 1)}% of lung volume (left ${fmt(f.lungInvolvementPercent.left, 1)}%, right ${fmt(f.lungInvolvementPercent.right, 1)}%), ${f.lesionCount} ${f.lesionCount === 1 ? 'lesion' : 'lesions'}${f.bilateral ? ', bilateral' : ''}.`
      : f
        ? ' No lesion found.'
        : '';
  const category = resultCategory(a);
  const verdict =
    category === 'covid-19-like'
      ? 'CT pattern consistent with COVID-19 pneumonia.'
      : category === 'other-opacity'
        ? 'lung opacity, not COVID-19-like: another cause (other pneumonia, tumour, nodule, scarring) is possible.'
        : 'no significant lung opacity; no CT pattern of COVID-19 pneumonia.';
  return `${head} ${verdict}${probText}${lesions}`;
}

/** The coded impression (and its abnormal flag) of an assessable study, per category; the SR writes the same code. */
export function impression(ctx: ResultContext): { value: Code; flag: string } | undefined {
  switch (resultCategory(ctx.analysis)) {
    case 'covid-19-like':
      return { value: IMPRESSION.covidPneumonia, flag: 'A' };
    case 'other-opacity':
      return { value: IMPRESSION.lungFinding, flag: 'A' };
    case 'no-significant-opacity':
      return { value: IMPRESSION.noAbnormality, flag: 'N' };
    default:
      return undefined;
  }
}

interface Obx {
  type: 'CE' | 'ST' | 'TX' | 'NM' | 'RP';
  id: Code;
  subId?: string;
  /** Already encoded (components joined, text escaped). */
  value: string;
  units?: Code;
  flag?: string;
}

function observations(ctx: ResultContext): Obx[] {
  const a = ctx.analysis;
  const out: Obx[] = [];
  const imp = impression(ctx);
  if (imp) out.push({ type: 'CE', id: OBSERVATION.impression, value: coded(imp.value), flag: imp.flag });
  out.push({ type: 'TX', id: OBSERVATION.conclusion, value: esc(conclusion(ctx)) });
  if (a.verdict === 'not-assessable') {
    out.push({ type: 'ST', id: OBSERVATION.notAssessableReason, value: esc(a.reason || 'not given') });
  } else {
    const num = (id: Code, n: number | null | undefined, digits: number, units?: Code) => {
      const v = fmt(n, digits);
      if (v !== undefined) out.push({ type: 'NM', id, value: v, units });
    };
    num(OBSERVATION.probability, a.probability, 3);
    num(OBSERVATION.threshold, a.threshold, 3);
    const f = a.findings;
    if (f) {
      num(OBSERVATION.lesionVolume, f.lesionVolumeMl, 2, UNIT.milliliter);
      num(OBSERVATION.involvementTotal, f.lungInvolvementPercent.total, 1, UNIT.percent);
      num(OBSERVATION.involvementLeft, f.lungInvolvementPercent.left, 1, UNIT.percent);
      num(OBSERVATION.involvementRight, f.lungInvolvementPercent.right, 1, UNIT.percent);
      num(OBSERVATION.lesionCount, f.lesionCount, 0);
      out.push({ type: 'CE', id: OBSERVATION.bilateral, value: f.bilateral ? comp('Y', 'Yes', SYSTEM.yesNo) : comp('N', 'No', SYSTEM.yesNo) });
    }
  }
  if (ctx.study.studyInstanceUid) out.push({ type: 'ST', id: OBSERVATION.studyInstanceUid, value: esc(ctx.study.studyInstanceUid) });
  a.models.forEach((m, i) => {
    out.push({ type: 'ST', id: OBSERVATION.model, subId: String(i + 1), value: esc(`${m.name} ${m.version}`) });
  });
  const url = ctx.links.resultPageUrl;
  // RP: pointer ^ application id ^ type of data (table 0191) ^ subtype (table 0291).
  if (url) out.push({ type: 'RP', id: OBSERVATION.resultPage, value: comp(url, 'CTGATE', 'TEXT', 'HTML') });
  return out;
}

/** The ORU^R01 message, segments separated by CR (no trailing CR; MLLP framing adds the frame). */
export function encodeOru(ctx: ResultContext, opts: OruOptions): string {
  const o = ctx.order;
  const p = o.patient;
  const completed = isoToHl7(ctx.analysis.completedAt, 'analysis.completedAt');
  const observed = studyDateTime(ctx.study.studyDate, ctx.study.studyTime) ?? completed;
  const accession = o.accessionNumber ?? ctx.study.accessionNumber;
  const msh = {
    2: ENC,
    3: esc(opts.sendingApplication),
    4: esc(opts.sendingFacility),
    5: esc(opts.receivingApplication ?? o.sender.application),
    6: esc(opts.receivingFacility ?? o.sender.facility),
    7: hl7Timestamp(opts.now),
    9: 'ORU^R01^ORU_R01',
    10: esc(opts.controlId),
    11: esc(o.message.processingId || 'P'),
    12: opts.version,
    18: 'UNICODE UTF-8',
  };
  const pid = {
    1: '1',
    3: p.identifiers.map((id) => comp(id.value, '', '', id.authority, id.type)).join('~'),
    5: comp(p.name.family, p.name.given[0], p.name.given.slice(1).join(' ')),
    7: p.birthDate ? p.birthDate.replaceAll('-', '') : '',
    8: p.sex ? SEX[p.sex] : '',
  };
  const placer = comp(o.placerOrderNumber, o.placerAuthority);
  const filler = comp(o.fillerOrderNumber);
  const orc = { 1: 'RE', 2: placer, 3: filler, 9: completed, 12: provider(o.orderingProvider) };
  const service = comp(
    o.procedure.code,
    o.procedure.text,
    o.procedure.system,
    o.procedure.alternate?.code,
    o.procedure.alternate?.text,
    o.procedure.alternate?.system,
  );
  const obr = {
    1: '1',
    2: placer,
    3: filler,
    4: service,
    7: observed,
    16: provider(o.orderingProvider),
    18: esc(accession),
    22: completed,
    24: 'CT',
    25: 'P',
  };
  const obx = observations(ctx).map((x, i) =>
    segment('OBX', {
      1: String(i + 1),
      2: x.type,
      3: coded(x.id),
      4: x.subId ?? '',
      5: x.value,
      6: x.units ? coded(x.units) : '',
      8: x.flag ?? '',
      11: 'P',
      14: observed,
      19: completed,
    }),
  );
  const notes = [identityNote(ctx), sharedAnalysisNote(ctx)].filter((n): n is string => n !== undefined);
  const nte = notes.map((n, i) => segment('NTE', { 1: String(i + 1), 2: 'L', 3: esc(n) }));
  return [segment('MSH', msh), segment('PID', pid), segment('PV1', { 1: '1', 2: 'O' }), segment('ORC', orc), segment('OBR', obr), ...nte, ...obx].join('\r');
}
