import { z } from 'zod';
import { readYamlDocument, regexPattern as regex } from '../config/yaml-file.js';

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
    facilities: z.record(z.string(), z.object({ fields: fieldMap.partial().optional(), chestCtCodes: z.array(code).optional() }).strict()).default({}),
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
  };
}

export function loadMappings(file: string): Mappings {
  return parseMappings(
    readYamlDocument(file, (problems) => new MappingsError(file, problems)),
    file,
  );
}
