/**
 * UIDs ctgate makes: "2.25." + the decimal value of a UUID (ISO/IEC 9834-8 §6.3 / DICOM PS3.5 §B.2), a root that
 * needs no registered organisation. Name-based (version 5) UIDs are a deterministic function of what they name, so
 * a retry writes the same objects; random (version 4) ones otherwise.
 */
import { createHash, randomUUID } from 'node:crypto';

/** RFC 4122 name-based UUID (version 5, SHA-1) as a 128-bit integer. */
function uuidV5(namespace: Buffer, name: string): bigint {
  const h = createHash('sha1').update(namespace).update(name, 'utf8').digest();
  const b = Buffer.from(h.subarray(0, 16));
  b[6] = ((b[6] as number) & 0x0f) | 0x50;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  return BigInt(`0x${b.toString('hex')}`);
}

function uuidBytes(u: bigint): Buffer {
  return Buffer.from(u.toString(16).padStart(32, '0'), 'hex');
}

// Namespace for ctgate's synthetic UIDs: uuid5(URL namespace, 'urn:ctgate:synthetic').
const URL_NAMESPACE = Buffer.from('6ba7b8119dad11d180b400c04fd430c8', 'hex');
const CTGATE_NAMESPACE = uuidBytes(uuidV5(URL_NAMESPACE, 'urn:ctgate:synthetic'));

/** 2.25 UID of a version-5 UUID of name (deterministic). */
export function deterministicUid(name: string): string {
  return `2.25.${uuidV5(CTGATE_NAMESPACE, name).toString(10)}`;
}

/** 2.25 UID of a random (version 4) UUID. */
export function randomUid(): string {
  return `2.25.${BigInt(`0x${randomUUID().replace(/-/g, '')}`).toString(10)}`;
}
