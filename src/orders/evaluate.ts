import { actionFor, type Order, type OrderAction } from '../domain/order.js';
import type { AckError } from '../hl7/ack.js';
import { type MshHeader, namespaceOf, readHeader } from '../hl7/header.js';
import { Hl7ParseError, type ParseOptions, parseMessage } from '../hl7/message.js';
import { type ChestCtDecision, decideChestCt, extractOrders, OrderError, SUPPORTED_MESSAGES } from './extract.js';
import type { Mappings } from './mappings.js';

export interface EvaluatedOrder {
  order: Order;
  chestCt: ChestCtDecision;
  action: OrderAction;
}

/** What a message means, decided without any I/O: rejected (AR) with a reason, or a list of orders. */
export type Evaluation = { kind: 'reject'; header: MshHeader | null; error: AckError } | { kind: 'orders'; header: MshHeader; orders: EvaluatedOrder[] };

const reject = (header: MshHeader | null, error: AckError): Evaluation => ({ kind: 'reject', header, error });

/**
 * Parsing cost grows with the number of fields, components and repetitions, and parsing blocks every connection;
 * no real order comes near these limits, so a message past them is refused before it is parsed. A value counts
 * each component, repetition and escape delimiter: a 4 MB PID-3 of a million repetitions ("X~X~…") passed the
 * field count and held the event loop for seconds (found by bench/fuzz.ts).
 */
export const MAX_SEGMENTS = 2000;
export const MAX_FIELDS = 50_000;
export const MAX_VALUES = 50_000;

/** The char code of `c` when it can serve as a delimiter other than the field separator, else -1. */
function delimiterCode(c: string | undefined, fieldSep: number): number {
  if (c === undefined || c === '' || /[A-Za-z0-9\s]/.test(c)) return -1;
  const code = c.charCodeAt(0);
  return code === fieldSep ? -1 : code;
}

function tooComplex(text: string, header: MshHeader): string | null {
  let segments = 1;
  let fields = 0;
  let values = 0;
  const sep = header.fieldSep.charCodeAt(0);
  // Component, repetition and escape characters as MSH-2 gives them, the usual ones where it gives none.
  const enc = header.encodingChars;
  const comp = delimiterCode(enc[0] ?? '^', sep);
  const rep = delimiterCode(enc[1] ?? '~', sep);
  const esc = delimiterCode(enc[2] ?? '\\', sep);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 13) segments++;
    else if (c === sep) fields++;
    else if (c === comp || c === rep || c === esc) values++;
  }
  if (segments > MAX_SEGMENTS) return `message has ${segments} segments; at most ${MAX_SEGMENTS} are accepted`;
  if (fields > MAX_FIELDS) return `message has ${fields} fields; at most ${MAX_FIELDS} are accepted`;
  if (values > MAX_VALUES) return `message has ${values} component, repetition and escape delimiters; at most ${MAX_VALUES} are accepted`;
  return null;
}

/** `quoteValues`: reasons quote the offending value (CTGATE_HL7_REASON_VALUES); by default they name its place only. */
export type EvaluateOptions = ParseOptions;

/** ` "value"` (its first `max` characters) when values are quoted, else nothing. */
const quoter =
  (opts: EvaluateOptions) =>
  (value: string, max: number): string =>
    opts.quoteValues ? ` "${value.slice(0, max)}"` : '';

export function evaluateMessage(text: string, mappings: Mappings, opts: EvaluateOptions = {}): Evaluation {
  const q = quoter(opts);
  const header = readHeader(text);
  if (!header) return reject(null, { kind: 'segmentSequence', reason: 'no MSH segment found: not an HL7 v2 message', segment: 'MSH' });
  if (header.controlId === '') return reject(header, { kind: 'requiredFieldMissing', reason: 'MSH-10 message control id is empty', segment: 'MSH', field: 10 });
  if (!/^2\.[1-8](\.\d+)?$/.test(header.version)) {
    return reject(header, {
      kind: 'unsupportedVersionId',
      reason: `MSH-12 version${q(header.version, 10)} is not HL7 v2.1–2.8`,
      segment: 'MSH',
      field: 12,
    });
  }
  const events = SUPPORTED_MESSAGES[header.messageType];
  if (!events) {
    return reject(header, {
      kind: 'unsupportedMessageType',
      reason: `MSH-9 message type${q(header.messageType, 8)} is not taken on this port (orders only: ORM^O01, OMI^O23)`,
      segment: 'MSH',
      field: 9,
    });
  }
  if (!events.includes(header.triggerEvent)) {
    return reject(header, {
      kind: 'unsupportedEventCode',
      reason: `MSH-9 trigger event${q(header.triggerEvent, 8)} is not supported for this message type (orders only: ORM^O01, OMI^O23)`,
      segment: 'MSH',
      field: 9,
    });
  }
  if (!['P', 'D', 'T'].includes(header.processingId)) {
    return reject(header, {
      kind: 'unsupportedProcessingId',
      reason: `MSH-11 processing id${q(header.processingId, 4)} is not P, D or T`,
      segment: 'MSH',
      field: 11,
    });
  }
  const complexity = tooComplex(text, header);
  if (complexity) return reject(header, { kind: 'segmentSequence', reason: complexity });
  const facility = namespaceOf(header.sendingFacility, header.componentSep);
  if (!mappings.facilityAllowed(facility)) {
    return reject(header, {
      kind: 'internalError',
      reason: `MSH-4 sending facility${q(facility, 40)} is not in allowedFacilities`,
      segment: 'MSH',
      field: 4,
    });
  }
  try {
    const msg = parseMessage(text, header, opts);
    const orders = extractOrders(msg, mappings, opts).map((order) => ({
      order,
      chestCt: decideChestCt(order, mappings),
      action: actionFor(order.orderControl),
    }));
    return { kind: 'orders', header, orders };
  } catch (e) {
    if (e instanceof OrderError) return reject(header, e.ackError);
    if (e instanceof Hl7ParseError) return reject(header, { kind: 'segmentSequence', reason: e.message, ...e.location });
    const detail = opts.quoteValues ? `: ${(e as Error).message.slice(0, 120)}` : ` (${(e as Error).name})`;
    return reject(header, { kind: 'internalError', reason: `unexpected parse failure${detail}` });
  }
}
