import { statSync } from 'node:fs';
import { z } from 'zod';
import { readYamlDocument, regexPattern as regex } from '../config/yaml-file.js';
import { DEFAULT_PATIENT_IDENTITY_RULE, IDENTITY_CHECKS, type PatientIdentityRule } from '../domain/patient-identity.js';

const fieldPath = z.string().regex(/^[A-Z][A-Z0-9]{2}-\d{1,3}(\.\d{1,2})?$/, 'a field path like OBR-18 or OBR-4.2');
const code = z.object({ system: z.string().min(1).optional(), code: z.string().min(1), display: z.string().optional() }).strict();
const fieldMap = z
  .object({
    accessionNumber: z.array(fieldPath).min(1),
    studyInstanceUid: z.array(fieldPath).min(1),
    placerOrderNumber: z.array(fieldPath).min(1),
    fillerOrderNumber: z.array(fieldPath).min(1),
  })
  .strict();

/** Per sender (or for all): how the order's patient is compared with the study's (domain/patient-identity.ts). */
const patientIdentity = z
  .object({
    compare: z
      .array(z.enum(IDENTITY_CHECKS))
      .min(1, 'compare at least one of id, issuer, name, birthDate (or set mode: off)')
      .refine((c) => !c.includes('issuer') || c.includes('id'), 'issuer is compared only together with id')
      .refine((c) => new Set(c).size === c.length, 'each of id, issuer, name, birthDate at most once')
      .optional(),
    issuerMap: z.record(z.string().min(1), z.string().min(1)).optional(),
    identifierTypes: z.array(z.string().min(1)).min(1).optional(),
    notComparable: z.enum(['mismatch', 'ignore']).optional(),
    mode: z.enum(['enforce', 'warn', 'off']).optional(),
  })
  .strict();

const schema = z
  .object({
    allowedFacilities: z.array(z.string().min(1)).min(1),
    chestCt: z
      .object({
        codes: z.array(code),
        systemAliases: z.record(z.string(), z.array(z.string().min(1))).default({}),
        textPatterns: z.array(regex).default([]),
        excludeTextPatterns: z.array(regex).default([]),
      })
      .strict(),
    fields: fieldMap,
    patientIdentity: patientIdentity.optional(),
    facilities: z
      .record(
        z.string(),
        z.object({ fields: fieldMap.partial().optional(), chestCtCodes: z.array(code).optional(), patientIdentity: patientIdentity.optional() }).strict(),
      )
      .default({}),
  })
  .strict();

export type MappingsDoc = z.infer<typeof schema>;
export type FieldName = keyof MappingsDoc['fields'];
export type ProcedureCode = z.infer<typeof code>;

export interface Mappings {
  doc: MappingsDoc;
  facilityAllowed(facility: string): boolean;
  fieldPaths(facility: string, name: FieldName): string[];
  chestCtCodes(facility: string): ProcedureCode[];
  /** Canonical system name for what the sender wrote ("C4" → "CPT"); the input itself when unknown. */
  canonicalSystem(system: string): string;
  textPatterns: RegExp[];
  excludeTextPatterns: RegExp[];
  /** The patient identity rule for a sender (MSH-4): the defaults, then `patientIdentity`, then the facility's own. */
  patientIdentity(facility: string): PatientIdentityRule;
}

export class MappingsError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: invalid mappings:\n  ${problems.join('\n  ')}`);
    this.name = 'MappingsError';
  }
}

export function parseMappings(doc: unknown, file = '<mappings>'): Mappings {
  const r = schema.safeParse(doc);
  if (!r.success) {
    throw new MappingsError(
      file,
      r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`),
    );
  }
  const m = r.data;
  const aliases = new Map<string, string>();
  for (const [canon, names] of Object.entries(m.chestCt.systemAliases)) {
    aliases.set(canon.toUpperCase(), canon);
    for (const n of names) aliases.set(n.toUpperCase(), canon);
  }
  const allowAll = m.allowedFacilities.includes('*');
  const allowed = new Set(m.allowedFacilities.map((f) => f.toUpperCase()));
  const facility = (f: string) => m.facilities[f] ?? m.facilities[f.toUpperCase()];
  return {
    doc: m,
    facilityAllowed: (f) => allowAll || allowed.has(f.toUpperCase()),
    fieldPaths: (f, name) => facility(f)?.fields?.[name] ?? m.fields[name],
    chestCtCodes: (f) => [...m.chestCt.codes, ...(facility(f)?.chestCtCodes ?? [])],
    canonicalSystem: (s) => aliases.get(s.trim().toUpperCase()) ?? s.trim(),
    textPatterns: m.chestCt.textPatterns.map((p) => new RegExp(p, 'i')),
    excludeTextPatterns: m.chestCt.excludeTextPatterns.map((p) => new RegExp(p, 'i')),
    patientIdentity: (f) => {
      const own = m.facilities[f] ? f : m.facilities[f.toUpperCase()] ? f.toUpperCase() : undefined;
      const site = own === undefined ? undefined : m.facilities[own]?.patientIdentity;
      const rule: PatientIdentityRule = { ...DEFAULT_PATIENT_IDENTITY_RULE, ...defined(m.patientIdentity), ...defined(site) };
      rule.source = site ? `facilities.${own}.patientIdentity` : m.patientIdentity ? 'patientIdentity' : 'default';
      return rule;
    },
  };
}

/** The keys of `o` whose value is not undefined (so that a spread never unsets a default). */
function defined<T extends object>(o: T | undefined): Partial<T> {
  return o ? (Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>) : {};
}

/**
 * The mappings in `file` for a long-running process that has no reload signal of its own (a worker): loaded now
 * (a bad file throws, as at start), then loaded again whenever the file's modification time or size changes, so
 * an engineer's fix applies to the next job (e.g. a retried one). A new version that does not validate is reported
 * through `onError` once per change and the previous mappings stay in force.
 */
export function followMappings(file: string, onError: (e: MappingsError) => void): { current(): Mappings } {
  const stamp = () => {
    try {
      const s = statSync(file);
      return `${s.mtimeMs}:${s.size}`;
    } catch {
      return 'missing';
    }
  };
  let seen = stamp();
  let mappings = loadMappings(file);
  return {
    current() {
      const now = stamp();
      if (now === seen) return mappings;
      seen = now;
      try {
        mappings = loadMappings(file);
      } catch (e) {
        if (!(e instanceof MappingsError)) throw e;
        onError(e);
      }
      return mappings;
    },
  };
}

export function loadMappings(file: string): Mappings {
  return parseMappings(
    readYamlDocument(file, (problems) => new MappingsError(file, problems)),
    file,
  );
}
