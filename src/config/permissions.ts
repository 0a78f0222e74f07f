/**
 * What a caller of ctgate's HTTP side may do. Three separate permissions, so that a viewer's or a ward's
 * credential can read results without being able to replay orders or write into the PACS:
 * - `results:read`: the pages, the job list and a job's results, the DICOMweb proxy's QIDO/WADO, /metrics;
 * - `jobs:admin`: dead letters and ignored messages (their raw HL7), replay, retry, mappings reload;
 * - `pacs:write`: STOW-RS through the DICOMweb proxy (also off as a whole unless CTGATE_PROXY_STOW is on).
 */
export type Permission = 'results:read' | 'jobs:admin' | 'pacs:write';
export const ALL_PERMISSIONS: readonly Permission[] = ['results:read', 'jobs:admin', 'pacs:write'];

export const isPermission = (s: string): s is Permission => (ALL_PERMISSIONS as readonly string[]).includes(s);

/** A token with a name (what the audit log records as "who") and what it may do. */
export interface NamedToken {
  name: string;
  token: string;
  permissions: Permission[];
}

export class PermissionSyntaxError extends Error {}

/** `results:read,jobs:admin` (commas, `+` or spaces between them) into a list; unknown names are an error. */
export function parsePermissions(raw: string): Permission[] {
  const items = raw
    .split(/[\s,+]+/)
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const bad = items.find((s) => !isPermission(s));
  if (bad !== undefined) throw new PermissionSyntaxError(`unknown permission "${bad}" (known: ${ALL_PERMISSIONS.join(', ')})`);
  if (items.length === 0) throw new PermissionSyntaxError('at least one permission');
  return [...new Set(items as Permission[])];
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/**
 * Further API tokens, each `name:permission+permission:token`, separated by commas or whitespace, e.g.
 * `viewer:results:read:<token>` is ambiguous, so permissions are joined with `+` and the token is what follows the
 * last colon: `pacs-feeder:results:read+pacs:write:<token>`. Names must be unique and tokens at least 16 characters.
 * Errors never quote a token.
 */
export function parseNamedTokens(raw: string): NamedToken[] {
  const out: NamedToken[] = [];
  for (const entry of raw.split(/[\s,]+/).filter((s) => s !== '')) {
    const first = entry.indexOf(':');
    const last = entry.lastIndexOf(':');
    if (first < 0 || last === first) throw new PermissionSyntaxError(`entries like name:permission+permission:token (entry ${out.length + 1})`);
    const name = entry.slice(0, first).toLowerCase();
    const token = entry.slice(last + 1);
    if (!NAME.test(name)) throw new PermissionSyntaxError(`a token name of letters, digits, '.', '_' or '-' (entry ${out.length + 1})`);
    if (token.length < 16) throw new PermissionSyntaxError(`a token of at least 16 characters for "${name}"`);
    if (out.some((t) => t.name === name)) throw new PermissionSyntaxError(`unique token names ("${name}" twice)`);
    out.push({ name, token, permissions: parsePermissions(entry.slice(first + 1, last)) });
  }
  return out;
}
