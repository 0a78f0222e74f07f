/**
 * The `fhir` section of mappings/results.yaml: identifier systems and codes the FHIR writer uses. Other result
 * writers keep their own sections in the same file; this loader reads only its own and ignores theirs.
 */
import { z } from 'zod';
import { readYamlDocument } from '../../config/yaml-file.js';

const uri = z.string().regex(/^(urn:[a-z0-9][a-z0-9-]*:\S+|https?:\/\/\S+)$/i, 'a URI (urn:… or http(s)://…)');
const template = z.string().min(1);
const coding = z.object({ system: uri, code: z.string().min(1), display: z.string().min(1) }).strict();
const localCode = z.object({ system: uri.optional(), code: z.string().regex(/^[^\s]+$/, 'a code without spaces'), display: z.string().min(1) }).strict();

const fhirSchema = z
  .object({
    identifierSystems: z
      .object({
        patient: z.record(z.string(), uri).default({}),
        patientDefault: template,
        placer: template,
        filler: template,
        accession: template,
        orderingProvider: template,
        job: uri,
      })
      .strict(),
    codeSystems: z.record(uri, z.array(z.string().min(1))).default({}),
    localSystem: uri,
    reportCode: coding,
    observations: z
      .object({
        probability: localCode,
        threshold: localCode,
        screening: localCode,
        lesionVolume: localCode,
        lesionCount: localCode,
        bilateral: localCode,
        involvement: localCode,
        involvementLeft: localCode,
        involvementRight: localCode,
        /** Whether the AI saw lung opacity at all (the screening Observation's component; category findings.ts). */
        opacity: localCode.default({ code: 'lung-opacity', display: 'AI finding of lung opacity on chest CT' }),
      })
      .strict(),
    values: z.object({ detected: coding, notDetected: coding }).strict(),
    conclusions: z
      .object({ positive: coding, otherOpacity: coding, noAbnormality: coding })
      .strict()
      .superRefine((c, ctx) => {
        // "Other opacity" is exactly what must never read as COVID-19 (or as normal) in the chart.
        for (const key of ['otherOpacity', 'noAbnormality'] as const) {
          if (c[key].system === c.positive.system && c[key].code === c.positive.code)
            ctx.addIssue({ code: 'custom', path: [key, 'code'], message: `must differ from conclusions.positive (${c.positive.code})` });
        }
        if (c.otherOpacity.system === c.noAbnormality.system && c.otherOpacity.code === c.noAbnormality.code)
          ctx.addIssue({ code: 'custom', path: ['otherOpacity', 'code'], message: `must differ from conclusions.noAbnormality (${c.noAbnormality.code})` });
      }),
    conclusionPrefix: z.string().min(1),
    device: z.object({ manufacturer: z.string().min(1), name: z.string().min(1), type: localCode }).strict(),
  })
  .strict();

export type FhirMappingsDoc = z.infer<typeof fhirSchema>;
export type ObservationCodeName = keyof FhirMappingsDoc['observations'];
export interface CodingOf {
  system: string;
  code: string;
  display: string;
}

export interface FhirMappings {
  doc: FhirMappingsDoc;
  /** Identifier system for a template key, with {authority}/{facility}/{application} filled in. */
  system(kind: 'placer' | 'filler' | 'accession' | 'orderingProvider', vars: TemplateVars): string;
  patientSystem(authority: string, vars: TemplateVars): string;
  /** FHIR system URI for what a sender wrote as coding system ("LN" → http://loinc.org); undefined when unknown. */
  codeSystemUri(senderSystem: string): string | undefined;
  observation(name: ObservationCodeName): CodingOf;
  deviceType: CodingOf;
}

export interface TemplateVars {
  authority?: string;
  facility: string;
  application: string;
}

export class ResultMappingsError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: invalid result mappings:\n  ${problems.join('\n  ')}`);
    this.name = 'ResultMappingsError';
  }
}

/** Characters safe in a URI path segment or URN part; anything else in a sender's value is percent-encoded. */
const fill = (tpl: string, vars: TemplateVars): string =>
  tpl.replace(/\{(authority|facility|application)\}/g, (_, k: keyof TemplateVars) => encodeURIComponent(vars[k] ?? vars.application));

export function parseFhirMappings(doc: unknown, file = '<results mappings>'): FhirMappings {
  const root = z.object({ fhir: fhirSchema }).safeParse(doc);
  if (!root.success) {
    throw new ResultMappingsError(
      file,
      root.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`),
    );
  }
  const m = root.data.fhir;
  const aliases = new Map<string, string>();
  for (const [system, names] of Object.entries(m.codeSystems)) for (const n of names) aliases.set(n.toUpperCase(), system);
  const patientByAuthority = new Map(Object.entries(m.identifierSystems.patient).map(([k, v]) => [k.toUpperCase(), v]));
  return {
    doc: m,
    system: (kind, vars) => fill(m.identifierSystems[kind], vars),
    patientSystem: (authority, vars) => patientByAuthority.get(authority.toUpperCase()) ?? fill(m.identifierSystems.patientDefault, { ...vars, authority }),
    codeSystemUri: (s) => aliases.get(s.trim().toUpperCase()),
    observation: (name) => {
      const c = m.observations[name];
      return { system: c.system ?? m.localSystem, code: c.code, display: c.display };
    },
    deviceType: { system: m.device.type.system ?? m.localSystem, code: m.device.type.code, display: m.device.type.display },
  };
}

export function loadFhirMappings(file: string): FhirMappings {
  return parseFhirMappings(
    readYamlDocument(file, (problems) => new ResultMappingsError(file, problems)),
    file,
  );
}
