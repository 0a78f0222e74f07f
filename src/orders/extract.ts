import { NON_IMAGING_DETAILS, type NonImagingDetail, type Order } from '../domain/order.js';
import type { AckError } from '../hl7/ack.js';
import { namespaceOf } from '../hl7/header.js';
import type { ParsedMessage, Segment } from '../hl7/message.js';
import type { FieldName, Mappings } from './mappings.js';

/** HL7 table 0119 order control codes (v2.5.1). */
const ORDER_CONTROL_CODES = new Set(
  'AF CA CH CN CR DC DE DF DR FU HD HR LI NA NW OC OD OE OF OH OK OP OR PA PR PY RA RE RF RL RO RP RQ RR RU SC SN SR SS UA UC UD UF UH UM UN UR UX XO XR XX'.split(
    ' ',
  ),
);

const MAX_TEXT_FOR_PATTERNS = 200;

export const SUPPORTED_MESSAGES: Record<string, string[]> = { ORM: ['O01'], OMI: ['O23'] };

export class OrderError extends Error {
  constructor(readonly ackError: AckError) {
    super(ackError.reason);
    this.name = 'OrderError';
  }
}

/** Where each non-OBR order detail carries its code (CE), if anywhere. */
const DETAIL_CODE_FIELD: Record<NonImagingDetail, number | undefined> = { RXO: 1, ODS: 3, ODT: 1, RQD: 2, RQ1: undefined };
const isNonImagingDetail = (type: string): type is NonImagingDetail => Object.hasOwn(NON_IMAGING_DETAILS, type);

/** One ORC with the OBR (or other order detail) and the IPC/ZDS/TQ1 that follow it. */
interface OrderGroup {
  segments: Map<string, Segment>;
  /** The first non-OBR ORDER_DETAIL segment of the group (RXO, ODS, ODT, RQD, RQ1), if any. */
  detail?: Segment & { type: NonImagingDetail };
}

function orderGroups(msg: ParsedMessage): OrderGroup[] {
  const groups: OrderGroup[] = [];
  let current: OrderGroup | undefined;
  for (const s of msg.segments) {
    if (s.type === 'ORC') {
      current = { segments: new Map([['ORC', s]]) };
      groups.push(current);
    } else if (current && ['OBR', 'IPC', 'ZDS', 'TQ1', 'OBX', 'NTE'].includes(s.type) && !current.segments.has(s.type)) {
      current.segments.set(s.type, s);
    } else if (current && !current.detail && isNonImagingDetail(s.type)) {
      current.detail = s as Segment & { type: NonImagingDetail };
    }
  }
  return groups;
}

/**
 * Reads `SEG-n[.c]` from the group first, then from the message (PID, PV1, Z-segments). An OBR is only ever the
 * group's own: a group whose detail is not an OBR must not read another group's.
 */
function readPath(msg: ParsedMessage, g: OrderGroup, path: string): string {
  const m = /^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?$/.exec(path);
  if (!m) return '';
  const [, seg = '', field, comp] = m;
  const s = g.segments.get(seg) ?? (seg === 'OBR' ? undefined : msg.first(seg));
  return s ? s.get(Number(field), comp ? Number(comp) : 1) : '';
}

function firstOf(msg: ParsedMessage, g: OrderGroup, mappings: Mappings, facility: string, name: FieldName) {
  for (const path of mappings.fieldPaths(facility, name)) {
    const v = readPath(msg, g, path);
    if (v !== '') return { value: v, path };
  }
  return { value: '', path: mappings.fieldPaths(facility, name)[0] ?? '' };
}

/** HL7 DTM/TS (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) to ISO 8601; undefined when it does not parse. */
export function hl7DateTimeToIso(v: string): string | undefined {
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$/.exec(v.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, tz] = m;
  if (mo && (Number(mo) < 1 || Number(mo) > 12)) return undefined;
  if (d && (Number(d) < 1 || Number(d) > 31)) return undefined;
  if (h && Number(h) > 23) return undefined;
  if (mi && Number(mi) > 59) return undefined;
  if (s && Number(s) > 59) return undefined;
  if (!mo) return y;
  if (!d) return `${y}-${mo}`;
  if (!h) return `${y}-${mo}-${d}`;
  const zone = tz ? `${tz.slice(0, 3)}:${tz.slice(3)}` : '';
  return `${y}-${mo}-${d}T${h}:${mi ?? '00'}:${s ?? '00'}${zone}`;
}

function birthDate(v: string): string | undefined {
  const iso = hl7DateTimeToIso(v);
  return iso && iso.length >= 10 ? iso.slice(0, 10) : undefined;
}

function sexOf(v: string): Order['patient']['sex'] {
  switch (v.toUpperCase()) {
    case 'M':
      return 'male';
    case 'F':
      return 'female';
    case 'O':
    case 'A':
    case 'N':
      return 'other';
    case '':
      return undefined;
    default:
      return 'unknown';
  }
}

function priorityOf(code: string): string | undefined {
  const c = code.toUpperCase();
  if (c === '') return undefined;
  if (c === 'S' || c === 'STAT') return 'stat';
  if (c === 'A' || c === 'ASAP') return 'asap';
  if (c === 'R' || c === 'ROUTINE') return 'routine';
  return c.toLowerCase();
}

const fail = (kind: AckError['kind'], reason: string, segment?: string, field?: number): never => {
  throw new OrderError({ kind, reason, segment, field });
};

/**
 * Reads every order group of an ORM^O01 / OMI^O23 into Orders, using the mappings for field positions.
 * Throws OrderError (with the HL7 error to report) when the message cannot yield a valid order.
 */
export function extractOrders(msg: ParsedMessage, mappings: Mappings, opts: { quoteValues?: boolean } = {}): Order[] {
  const h = msg.header;
  const facility = namespaceOf(h.sendingFacility, h.componentSep);
  const application = namespaceOf(h.sendingApp, h.componentSep);
  const pid = msg.first('PID');
  if (!pid) fail('requiredFieldMissing', 'PID segment missing', 'PID');
  const identifiers = (pid as Segment)
    .repetitions(3)
    .map((c) => {
      // CX.4 is an HD: namespace ID & universal ID & universal ID type. DICOM's IssuerOfPatientID may carry either.
      const [namespace = '', universal = ''] = (c[3] ?? '').split('&');
      const authorityId = universal.trim();
      return { value: (c[0] ?? '').trim(), authority: namespace.trim(), ...(authorityId ? { authorityId } : {}), type: (c[4] ?? '').trim() };
    })
    .filter((i) => i.value !== '');
  if (identifiers.length === 0) fail('requiredFieldMissing', 'PID-3 patient identifier list is empty', 'PID', 3);
  const groups = orderGroups(msg);
  if (groups.length === 0) fail('segmentSequence', 'no ORC segment: an order message needs ORC and OBR', 'ORC');
  const p = pid as Segment;
  const patient: Order['patient'] = {
    identifiers,
    name: { family: p.get(5, 1), given: [p.get(5, 2), p.get(5, 3)].filter((s) => s !== '') },
    birthDate: birthDate(p.get(7)),
    sex: sexOf(p.get(8)),
  };
  return groups.map((g) => {
    const orc = g.segments.get('ORC') as Segment;
    const obr = g.segments.get('OBR');
    // ORM^O01's ORDER_DETAIL is a choice of OBR, RQD, RQ1, RXO, ODS, ODT; OMI^O23 requires an OBR.
    const detail = !obr && h.messageType === 'ORM' ? g.detail : undefined;
    if (!obr && !detail) fail('segmentSequence', 'ORC is not followed by an OBR', 'OBR');
    const control = orc.get(1).toUpperCase();
    if (control === '') fail('requiredFieldMissing', 'ORC-1 order control is empty', 'ORC', 1);
    if (!ORDER_CONTROL_CODES.has(control))
      fail('tableValueNotFound', `ORC-1 order control${opts.quoteValues ? ` "${control.slice(0, 4)}"` : ''} is not in HL7 table 0119`, 'ORC', 1);
    if (detail) return nonImagingOrder(msg, g, detail, control, application, facility, mappings, patient);
    const placer = firstOf(msg, g, mappings, facility, 'placerOrderNumber');
    if (placer.value === '')
      fail('requiredFieldMissing', `placer order number missing (looked in ${mappings.fieldPaths(facility, 'placerOrderNumber').join(', ')})`, 'ORC', 2);
    const o = obr as Segment;
    const code = o.get(4, 1);
    const text = o.get(4, 2);
    if (code === '' && text === '') fail('requiredFieldMissing', 'OBR-4 universal service identifier is empty', 'OBR', 4);
    const tq1 = g.segments.get('TQ1');
    const priority = priorityOf(tq1?.get(9) || orc.get(7, 6) || o.get(27, 6) || o.get(5));
    const provider = orc.get(12, 1) || orc.get(12, 2) ? orc.repetitions(12)[0] : o.repetitions(16)[0];
    const accession = firstOf(msg, g, mappings, facility, 'accessionNumber').value;
    const studyUid = firstOf(msg, g, mappings, facility, 'studyInstanceUid').value;
    if (studyUid !== '' && !/^[0-2](\.(0|[1-9]\d*))+$/.test(studyUid)) {
      fail('dataTypeError', 'StudyInstanceUID is not a valid DICOM UID', 'IPC', 3);
    }
    const order: Order = {
      sender: { application, facility },
      message: { type: `${h.messageType}^${h.triggerEvent}`, controlId: h.controlId, version: h.version, processingId: h.processingId },
      orderControl: control,
      placerOrderNumber: placer.value,
      placerAuthority: (placer.path.startsWith('ORC') ? orc.get(2, 2) : o.get(2, 2)) || undefined,
      fillerOrderNumber: firstOf(msg, g, mappings, facility, 'fillerOrderNumber').value || undefined,
      accessionNumber: accession || undefined,
      studyInstanceUid: studyUid || undefined,
      procedure: {
        code,
        text,
        system: o.get(4, 3),
        alternate: o.get(4, 4) ? { code: o.get(4, 4), text: o.get(4, 5), system: o.get(4, 6) } : undefined,
      },
      priority,
      orderingProvider: provider ? { id: provider[0] ?? '', family: provider[1] ?? '', given: provider[2] ?? '' } : undefined,
      orderDateTime: hl7DateTimeToIso(orc.get(9)),
      patient,
    };
    return order;
  });
}

/**
 * An order whose detail is RXO, ODS, ODT, RQD or RQ1: valid, never an imaging order, so it is only recorded. Only
 * what the ORC says is read, and nothing is required of it beyond a valid ORC-1 (it creates no job, so it needs no
 * placer number either).
 */
function nonImagingOrder(
  msg: ParsedMessage,
  g: OrderGroup,
  detail: Segment & { type: NonImagingDetail },
  control: string,
  application: string,
  facility: string,
  mappings: Mappings,
  patient: Order['patient'],
): Order {
  const h = msg.header;
  const orc = g.segments.get('ORC') as Segment;
  const placer = firstOf(msg, g, mappings, facility, 'placerOrderNumber');
  const codeField = DETAIL_CODE_FIELD[detail.type];
  return {
    sender: { application, facility },
    message: { type: `${h.messageType}^${h.triggerEvent}`, controlId: h.controlId, version: h.version, processingId: h.processingId },
    orderControl: control,
    placerOrderNumber: placer.value,
    placerAuthority: (placer.path.startsWith('ORC') ? orc.get(2, 2) : '') || undefined,
    fillerOrderNumber: firstOf(msg, g, mappings, facility, 'fillerOrderNumber').value || undefined,
    procedure: codeField
      ? { code: detail.get(codeField, 1), text: detail.get(codeField, 2), system: detail.get(codeField, 3) }
      : { code: '', text: '', system: '' },
    orderDetail: detail.type,
    orderDateTime: hl7DateTimeToIso(orc.get(9)),
    patient,
  };
}

export interface ChestCtDecision {
  chestCt: boolean;
  /** Why, e.g. "code CPT 71250" or "text matches /…/", or why not. */
  because: string;
}

/** Is this order a chest CT by the mappings' codes and text patterns? Alternate codes (OBR-4.4–6) count too. */
export function decideChestCt(order: Order, mappings: Mappings): ChestCtDecision {
  if (order.orderDetail) {
    return { chestCt: false, because: `order detail is ${order.orderDetail} (${NON_IMAGING_DETAILS[order.orderDetail]}), not an imaging order` };
  }
  const codes = mappings.chestCtCodes(order.sender.facility);
  const { alternate, ...primary } = order.procedure;
  const candidates = [primary, ...(alternate ? [alternate] : [])];
  for (const c of candidates) {
    if (c.code === '') continue;
    const sys = mappings.canonicalSystem(c.system);
    const hit = codes.find(
      (k) => k.code.toUpperCase() === c.code.toUpperCase() && (!k.system || c.system === '' || mappings.canonicalSystem(k.system) === sys),
    );
    if (hit) return { chestCt: true, because: `code ${hit.system ?? 'local'} ${hit.code}` };
  }
  for (const c of candidates) {
    // CWE.2 is at most 199 characters; bounding the text also bounds the cost of the engineer's patterns.
    const text = c.text.slice(0, MAX_TEXT_FOR_PATTERNS);
    if (text === '') continue;
    const excluded = mappings.excludeTextPatterns.find((r) => r.test(text));
    if (excluded) continue;
    const matched = mappings.textPatterns.find((r) => r.test(text));
    if (matched) return { chestCt: true, because: `text matches ${matched}` };
  }
  return { chestCt: false, because: 'procedure code and text match no chest-CT mapping' };
}
