/**
 * The two ACSE facts the receiver's gate needs before DCMTK takes over an association (PS3.8 §9.3): the Called and
 * Calling AE titles of an A-ASSOCIATE-RQ, and the 10-byte A-ASSOCIATE-RJ that refuses one. Nothing else of the
 * protocol is spoken here: an accepted association is handed, byte for byte, to DCMTK's storescp.
 *
 * A-ASSOCIATE-RQ: type 0x01, reserved, length (uint32 BE, bytes after the first 6), protocol version (2), reserved
 * (2), Called AE (16 bytes, space padded), Calling AE (16), reserved (32), then variable items.
 */

export const PDU_ASSOCIATE_RQ = 0x01;
/** Upper bound for an A-ASSOCIATE-RQ: a few hundred presentation contexts fit well within it. */
export const MAX_ASSOCIATE_RQ_BYTES = 256 * 1024;

export type AssociateRqRead =
  | { state: 'incomplete' }
  | { state: 'invalid'; why: string }
  | { state: 'complete'; calledAe: string; callingAe: string; bytes: number };

/** Reads the first PDU of a connection from what has arrived so far. */
export function readAssociateRq(buf: Buffer): AssociateRqRead {
  if (buf.length < 6) return { state: 'incomplete' };
  if (buf[0] !== PDU_ASSOCIATE_RQ) return { state: 'invalid', why: `first PDU of type 0x${(buf[0] ?? 0).toString(16).padStart(2, '0')}, not A-ASSOCIATE-RQ` };
  const length = buf.readUInt32BE(2);
  if (length < 68) return { state: 'invalid', why: 'A-ASSOCIATE-RQ too short' };
  if (length + 6 > MAX_ASSOCIATE_RQ_BYTES) return { state: 'invalid', why: 'A-ASSOCIATE-RQ too long' };
  if (buf.length < 6 + 68) return { state: 'incomplete' };
  const calledAe = aeField(buf, 10);
  const callingAe = aeField(buf, 26);
  return { state: 'complete', calledAe, callingAe, bytes: length + 6 };
}

/** An AE title field: 16 bytes, leading and trailing spaces are not significant (PS3.5 VR AE). */
function aeField(buf: Buffer, at: number): string {
  return buf
    .subarray(at, at + 16)
    .toString('latin1')
    .replace(/\0+$/, '')
    .trim();
}

/** A-ASSOCIATE-RJ reasons for source 1, DICOM UL service-user (PS3.8 Table 9-21). */
export const REJECT_REASON = {
  noReasonGiven: 1,
  applicationContextNotSupported: 2,
  callingAeNotRecognized: 3,
  calledAeNotRecognized: 7,
} as const;

/** A-ASSOCIATE-RJ: rejected-permanent (1), by the service-user (source 1), with `reason`. */
export function associateRj(reason: number, opts: { transient?: boolean; source?: 1 | 2 | 3 } = {}): Buffer {
  // type 0x03, reserved, length 4, reserved, result, source, reason/diag.
  return Buffer.from([0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, opts.transient ? 2 : 1, opts.source ?? 1, reason]);
}
