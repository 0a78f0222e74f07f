/**
 * Medplum (and servers like it) run a transaction holding conditional operations under serializable isolation
 * and refuse it beyond 8 entries ("Transaction requires strict isolation but has too many entries"). Such a
 * result Bundle is sent in two transactions instead: first the conditional creates (Patient, ServiceRequest),
 * then the rest with their bundle-local references replaced by the ids the server answered. Both steps are
 * idempotent, so a failure between them is cured by sending the whole result again.
 */
import type { Bundle, BundleEntry } from 'fhir/r4.js';

/** Entries per transaction a strict server accepts when the transaction holds conditional operations. */
export const STRICT_TRANSACTION_ENTRIES = 8;

const conditional = (e: BundleEntry) => Boolean(e.request?.ifNoneExist) || (e.request?.url ?? '').includes('?');

export function needsSplit(bundle: Bundle, limit = STRICT_TRANSACTION_ENTRIES): boolean {
  const entries = bundle.entry ?? [];
  return entries.length > limit && entries.some(conditional);
}

export function splitConditional(bundle: Bundle): [Bundle, Bundle] {
  const entries = bundle.entry ?? [];
  return [
    { ...bundle, entry: entries.filter(conditional) },
    { ...bundle, entry: entries.filter((e) => !conditional(e)) },
  ];
}

/** A copy of the bundle with every Reference.reference found in `resolved` replaced. */
export function resolveReferences(bundle: Bundle, resolved: ReadonlyMap<string, string>): Bundle {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === 'reference' && typeof x === 'string' ? (resolved.get(x) ?? x) : walk(x);
    return out;
  };
  return walk(bundle) as Bundle;
}
