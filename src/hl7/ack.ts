import type { MshHeader } from './header.js';

export type AckCode = 'AA' | 'AE' | 'AR' | 'CA' | 'CE' | 'CR';

/** HL7 table 0357 (message error condition codes) — the subset ctgate reports. */
export const HL7_ERROR = {
  segmentSequence: { code: 100, text: 'Segment sequence error' },
  requiredFieldMissing: { code: 101, text: 'Required field missing' },
  dataTypeError: { code: 102, text: 'Data type error' },
  tableValueNotFound: { code: 103, text: 'Table value not found' },
  unsupportedMessageType: { code: 200, text: 'Unsupported message type' },
  unsupportedEventCode: { code: 201, text: 'Unsupported event code' },
  unsupportedProcessingId: { code: 202, text: 'Unsupported processing id' },
  unsupportedVersionId: { code: 203, text: 'Unsupported version id' },
  unknownKey: { code: 204, text: 'Unknown key identifier' },
  duplicateKey: { code: 205, text: 'Duplicate key identifier' },
  internalError: { code: 207, text: 'Application internal error' },
} as const;

export type Hl7ErrorKind = keyof typeof HL7_ERROR;

export interface AckError {
  kind: Hl7ErrorKind;
  /** Why, in words an integration engineer can act on (no PHI). */
  reason: string;
  /** Where, e.g. { segment: 'ORC', field: 2 }. */
  segment?: string;
  field?: number;
}

export interface AckInput {
  /** The header of the message being answered; null when no MSH could be found. */
  header: MshHeader | null;
  code: AckCode;
  text?: string;
  error?: AckError;
  /** Who ctgate says it is when the sender named nobody in MSH-5/6. */
  appName: string;
  facilityName: string;
  controlId: string;
  now: Date;
}

const DEFAULT_ENC = '^~\\&';

export function hl7Timestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}+0000`;
}

/** Escapes text for a field using the message's own delimiters (HL7 2.x section 2.7). */
export function escapeHl7(text: string, fieldSep = '|', enc = DEFAULT_ENC): string {
  const [comp = '^', rep = '~', esc = '\\', sub = '&'] = enc.split('');
  let out = '';
  for (const ch of text.replace(/[\r\n]+/g, ' ')) {
    if (ch === esc) out += `${esc}E${esc}`;
    else if (ch === fieldSep) out += `${esc}F${esc}`;
    else if (ch === comp) out += `${esc}S${esc}`;
    else if (ch === rep) out += `${esc}R${esc}`;
    else if (ch === sub) out += `${esc}T${esc}`;
    else out += ch;
  }
  return out;
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return true;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/**
 * Builds an ACK for `header`: MSH mirrors the sender (our MSH-3/4 = their MSH-5/6 and vice versa),
 * MSA-2 echoes their MSH-10, and ERR explains any error with a table-0357 code.
 */
export function buildAck(input: AckInput): string {
  const h = input.header;
  const fs = h?.fieldSep || '|';
  const enc = h && h.encodingChars.length >= 4 ? h.encodingChars.slice(0, 4) : DEFAULT_ENC;
  const esc = (s: string) => escapeHl7(s, fs, enc);
  const comp = enc[0] ?? '^';
  const version = h?.version && /^2\.\d/.test(h.version) ? h.version : '2.5.1';
  const event = h?.triggerEvent ?? '';
  const msh = [
    'MSH',
    enc,
    h?.receivingApp || input.appName,
    h?.receivingFacility || input.facilityName,
    h?.sendingApp ?? '',
    h?.sendingFacility ?? '',
    hl7Timestamp(input.now),
    '',
    versionAtLeast(version, 2, 4) ? `ACK${comp}${event}${comp}ACK` : `ACK${comp}${event}`,
    input.controlId,
    h?.processingId || 'P',
    version,
  ].join(fs);
  const text = input.text ?? input.error?.reason ?? '';
  const segments = [msh, ['MSA', input.code, h?.controlId ?? '', esc(text.slice(0, 80))].join(fs)];
  const e = input.error;
  if (e) {
    const def = HL7_ERROR[e.kind];
    const sub = enc[3] ?? '&';
    if (versionAtLeast(version, 2, 5)) {
      const loc = e.segment ? [e.segment, '1', e.field ? String(e.field) : ''].join(comp) : '';
      segments.push(['ERR', '', loc, [String(def.code), esc(def.text), 'HL70357'].join(comp), 'E', '', '', '', esc(e.reason)].join(fs));
    } else {
      const codeAndText = [String(def.code), esc(def.text), 'HL70357'].join(sub);
      segments.push(['ERR', [e.segment ?? '', e.segment ? '1' : '', e.field ? String(e.field) : '', codeAndText].join(comp)].join(fs));
    }
  }
  return segments.join('\r');
}

/**
 * Whether the message asked for enhanced acknowledgment mode (MSH-15 or MSH-16 valued), and if so
 * whether the accept (commit) ACK for this outcome is to be sent at all.
 */
export function ackPlan(header: MshHeader | null, ok: boolean): { enhanced: boolean; send: boolean } {
  const accept = header?.acceptAckType ?? '';
  const app = header?.appAckType ?? '';
  if (accept === '' && app === '') return { enhanced: false, send: true };
  switch (accept || 'AL') {
    case 'NE':
      return { enhanced: true, send: false };
    case 'ER':
      return { enhanced: true, send: !ok };
    case 'SU':
      return { enhanced: true, send: ok };
    default:
      return { enhanced: true, send: true };
  }
}

/** The original-mode code mapped to its enhanced-mode (commit) equivalent when needed. */
export function ackCodeFor(outcome: 'accept' | 'error' | 'reject', enhanced: boolean): AckCode {
  if (outcome === 'accept') return enhanced ? 'CA' : 'AA';
  if (outcome === 'error') return enhanced ? 'CE' : 'AE';
  return enhanced ? 'CR' : 'AR';
}
