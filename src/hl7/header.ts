/** The MSH segment read leniently from raw text, so even a message hl7v2 rejects can be answered. */
export interface MshHeader {
  fieldSep: string;
  encodingChars: string;
  componentSep: string;
  /** MSH-3..6 as sent (all components), for mirroring in the ACK. */
  sendingApp: string;
  sendingFacility: string;
  receivingApp: string;
  receivingFacility: string;
  messageType: string;
  triggerEvent: string;
  messageStructure: string;
  controlId: string;
  processingId: string;
  version: string;
  /** MSH-15 / MSH-16: present only in enhanced acknowledgment mode. */
  acceptAckType: string;
  appAckType: string;
  charset: string;
}

/** MSH-n from the MSH line split on its separator: parts[n-1], because MSH-1 is the separator itself. */
function mshField(parts: string[], n: number): string {
  return (parts[n - 1] ?? '').trim();
}

/** Finds the MSH segment anywhere near the start of `text` and reads its fields; null when there is none. */
export function readHeader(text: string): MshHeader | null {
  const at = text.indexOf('MSH');
  if (at === -1 || at > 64) return null;
  // The first line only: splitting the whole message to take its first line costs as much as the rest of this.
  let end = at;
  while (end < text.length) {
    const c = text.charCodeAt(end);
    if (c === 13 || c === 10) break;
    end++;
  }
  const seg = text.slice(at, end);
  if (seg.length < 8) return null;
  const fieldSep = seg[3] ?? '';
  if (/[A-Za-z0-9\s]/.test(fieldSep)) return null;
  const parts = seg.split(fieldSep);
  const enc = parts[1] ?? '';
  const componentSep = enc[0] && !/[A-Za-z0-9\s]/.test(enc[0]) ? enc[0] : '^';
  const type = mshField(parts, 9).split(componentSep);
  return {
    fieldSep,
    encodingChars: enc,
    componentSep,
    sendingApp: mshField(parts, 3),
    sendingFacility: mshField(parts, 4),
    receivingApp: mshField(parts, 5),
    receivingFacility: mshField(parts, 6),
    messageType: (type[0] ?? '').toUpperCase(),
    triggerEvent: (type[1] ?? '').toUpperCase(),
    messageStructure: (type[2] ?? '').toUpperCase(),
    controlId: mshField(parts, 10),
    processingId: mshField(parts, 11).split(componentSep)[0] ?? '',
    version: mshField(parts, 12).split(componentSep)[0] ?? '',
    acceptAckType: mshField(parts, 15).toUpperCase(),
    appAckType: mshField(parts, 16).toUpperCase(),
    charset: mshField(parts, 18),
  };
}

/** First component of an HD field such as MSH-4 ("GENHOSP^1.2.3^ISO" → "GENHOSP"). */
export function namespaceOf(hd: string, componentSep = '^'): string {
  return (hd.split(componentSep)[0] ?? '').trim();
}
