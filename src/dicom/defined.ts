/**
 * `fields` without the entries whose value is undefined, in the same order: an attribute a data set or a C-FIND
 * answer leaves out stays absent from the object (no key holding undefined), so JSON and deep comparisons see only
 * what the source holds.
 */
export function definedOnly<T extends object>(fields: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v;
  return out as T;
}
