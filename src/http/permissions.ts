/**
 * Which permission a request needs, decided from its method and its normalised path (gate.ts), so that no
 * spelling of a path reaches a handler with less than the permission that handler's data or action needs.
 */
import type { Permission } from '../config/permissions.js';

export { ALL_PERMISSIONS, type Permission } from '../config/permissions.js';

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * `path` is the normalised path (lower case, decoded, dot segments resolved). The most demanding rule wins:
 * writes to the PACS need pacs:write; the raw HL7 and every state-changing API call need jobs:admin; everything
 * else behind the gate needs results:read.
 */
export function permissionFor(method: string, path: string): Permission {
  const read = READ_METHODS.has(method.toUpperCase());
  if (path === '/dicom-web' || path.startsWith('/dicom-web/')) return read ? 'results:read' : 'pacs:write';
  if (path === '/api' || path.startsWith('/api/')) {
    if (!read) return 'jobs:admin';
    if (path === '/api/messages' || path.startsWith('/api/messages/') || path.startsWith('/api/audit')) return 'jobs:admin';
    return 'results:read';
  }
  return read ? 'results:read' : 'jobs:admin';
}
