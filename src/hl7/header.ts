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

/** Finds the MSH segment anywhere near the start of `text` and reads its fields; null when there is none. */
export function readHeader(text: string): MshHeader | null {
  const at = text.indexOf('MSH');
  if (at === -1 || at > 64) return null;
  const seg = text.slice(at).split(/\r|\n/)[0] ?? '';
  if (seg.length < 8) return null;
  const fieldSep = seg[3] ?? '';
  if (/[A-Za-z0-9\s]/.test(fieldSep)) return null;
  const parts = seg.split(fieldSep);
  const enc = parts[1] ?? '';
  const componentSep = enc[0] && !/[A-Za-z0-9\s]/.test(enc[0]) ? enc[0] : '^';
  // parts[n-1] is MSH-n because MSH-1 is the separator itself.
  const f = (n: number) => (parts[n - 1] ?? '').trim();
  const type = f(9).split(componentSep);
  return {
    fieldSep,
    encodingChars: enc,
    componentSep,
    sendingApp: f(3),
    sendingFacility: f(4),
    receivingApp: f(5),
    receivingFacility: f(6),
    messageType: (type[0] ?? '').toUpperCase(),
    triggerEvent: (type[1] ?? '').toUpperCase(),
    messageStructure: (type[2] ?? '').toUpperCase(),
    controlId: f(10),
    processingId: f(11).split(componentSep)[0] ?? '',
    version: f(12).split(componentSep)[0] ?? '',
    acceptAckType: f(15).toUpperCase(),
    appAckType: f(16).toUpperCase(),
    charset: f(18),
  };
}

/** First component of an HD field such as MSH-4 ("GENHOSP^1.2.3^ISO" → "GENHOSP"). */
export function namespaceOf(hd: string, componentSep = '^'): string {
  return (hd.split(componentSep)[0] ?? '').trim();
}
