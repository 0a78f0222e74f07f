import { createHash } from 'node:crypto';

/** ctgate's namespace for name-based UUIDs (random, fixed forever: changing it would duplicate every resource). */
const NAMESPACE = Buffer.from('3f0c5a52c7e44c5e9c2b8a7d1e6f4b21', 'hex');

/**
 * A name-based (version 5, RFC 9562) UUID of the parts: the same business key always gives the same id, and the
 * id reveals nothing of the key. Servers that only take UUIDs as client ids (Medplum) accept it; so do the rest.
 */
export function stableId(...parts: string[]): string {
  const h = createHash('sha1').update(NAMESPACE).update(parts.join('\u001f')).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x50;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export const urnUuid = (id: string): string => `urn:uuid:${id}`;
