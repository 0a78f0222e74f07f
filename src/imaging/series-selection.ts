import { z } from 'zod';
import { readYamlDocument, regexPattern as regex } from '../config/yaml-file.js';

/**
 * What series selection knows about one series of a study. Built from the PACS by src/dicomweb/series-candidates.ts
 * (or by hand in tests): imaging code knows no PACS.
 */
export interface SeriesCandidate {
  seriesInstanceUid: string;
  seriesNumber?: number;
  /** Modality (0008,0060). */
  modality?: string;
  /** SeriesDescription (0008,103E). */
  description?: string;
  /** ImageType (0008,0008) values of one instance; empty when the PACS gave none. */
  imageType: string[];
  /** SliceThickness (0018,0050) in mm. */
  sliceThickness?: number;
  /** Distance in mm between adjacent slice positions along the slice normal (median), when it was measured. */
  sliceSpacing?: number;
  /** ImageOrientationPatient (0020,0037): row then column direction cosines. */
  orientation?: number[];
  /** NumberOfSeriesRelatedInstances (0020,1209), or the instances counted. */
  numberOfInstances: number;
  /** ConvolutionKernel (0018,1210), first value (Siemens writes e.g. "Br64\3": kernel, then iterative strength). */
  kernel?: string;
}

export interface SeriesDecision {
  seriesInstanceUid: string;
  seriesNumber?: number;
  description?: string;
  accepted: boolean;
  /** 1 for the chosen series; only for accepted series. */
  rank?: number;
  /** Why it was refused (every rule it failed), or what it was ranked on and where it ranked. */
  reasons: string[];
}

export interface SeriesSelection {
  chosen?: SeriesCandidate;
  /** One per candidate, in the candidates' order. */
  decisions: SeriesDecision[];
  /** When no series fits: one sentence listing why each series was refused. */
  reason?: string;
}

const upper = z
  .string()
  .min(1)
  .transform((s) => s.trim().toUpperCase());

/*
 * Defaults (what `parseSeriesRules({})` yields, and what mappings/series.yaml spells out). All patterns are
 * case-insensitive JavaScript regular expressions.
 */
export const DEFAULT_EXCLUDE_DESCRIPTION = [
  // Planning images: one or two projection radiographs, never a volume.
  '\\b(scout|topogram|topo|localizer|localiser|surview|scanogram|pilot)\\b',
  // Dose reports and protocol pages that some scanners store as CT images (screen captures of text).
  '\\b(dose\\s*(report|info|summary)|patient\\s*protocol)\\b',
  // Screen captures and saved key images.
  '\\b(screen\\s*save|screenshot|secondary\\s*capture|key\\s*images?)\\b',
  // Slab renderings: maximum / minimum intensity projections distort HU along z.
  '\\b(mip|min\\s*ip|minip|max\\s*ip|slab)\\b',
  // Reformats in other planes (also caught by orientation when their ImageOrientationPatient is right).
  '\\b(mpr|coronal|cor|sagittal|sag|oblique|curved)\\b',
  // 3D renderings.
  '\\b(3d|vr|vrt|volume\\s*render\\w*|ssd|surface)\\b',
  // Bolus tracking / monitoring scans: the same level repeated over time, not a volume.
  '\\b(bolus|tracking|monitoring|premon\\w*|smart\\s*prep|care\\s*bolus)\\b',
];

export const DEFAULT_PREFER_DESCRIPTION = [
  // Lung reconstructions named as such ("LUNG 1.25", "Lungs", "Pulmonary", German "Lunge").
  '\\b(lung\\w*|lunge|pulmo\\w*)\\b',
  // Siemens sharp and lung kernels written in the description: B60f–B80f, Br59–Br89, Bl57/Bl64, I70f.
  '\\b(b[6-8]\\d[fsh]?|br(59|[6-8]\\d)|bl\\d\\d|i[6-8]\\d[fsh]?)\\b',
  // Philips lung kernels YA / YB (the single-letter "L" is only trusted in ConvolutionKernel, below).
  '\\by[ab]\\b',
  // Canon / Toshiba lung kernels FC50–FC57 and high-resolution lung FC80–FC86.
  '\\bfc(5[0-7]|8[0-6])\\b',
];

export const DEFAULT_PREFER_KERNEL = [
  // GE: LUNG, and BONE / BONEPLUS (the sharp kernels GE sites use for lung reading).
  '^(lung|bone|boneplus)$',
  // Siemens: B60f–B80f, Br59–Br89 (ADMIRE/SAFIRE sharp), Bl57/Bl64 (lung), I70f (iterative sharp).
  '^(b[6-8]\\d[fsh]?|br(59|[6-8]\\d)|bl\\d\\d|i[6-8]\\d[fsh]?)$',
  // Philips: L (lung), YA, YB.
  '^(l|y[ab])$',
  // Canon / Toshiba: FC50–FC57 (lung), FC80–FC86 (high-resolution lung).
  '^fc(5[0-7]|8[0-6])$',
];

const schema = z
  .object({
    /** Modalities accepted (0008,0060). */
    modalities: z.array(upper).min(1).default(['CT']),
    /** Largest angle in degrees between the slice normal (row × column cosines) and the patient z axis. */
    axialToleranceDeg: z.number().min(0).max(90).default(10),
    /** Accepted slice thickness in mm, inclusive (the paper's data: 0.625–10 mm). */
    sliceThicknessMm: z
      .object({ min: z.number().positive().default(0.625), max: z.number().positive().default(10) })
      .strict()
      .default({ min: 0.625, max: 10 })
      .refine((r) => r.min <= r.max, { message: 'min must not be greater than max' }),
    /**
     * Refuse a series whose measured slice spacing exceeds its thickness by more than this factor (interspaced
     * HRCT, e.g. 1 mm every 10 mm, is not a volume). Only applied when the spacing was measured.
     */
    maxSpacingToThicknessRatio: z.number().min(1).default(2),
    /** Fewest instances (slices) a series needs. */
    minSlices: z.number().int().min(1).default(20),
    /** ImageType values that must all be present (ORIGINAL: acquired, not derived; PRIMARY: not a secondary capture). */
    requireImageType: z.array(upper).default(['ORIGINAL', 'PRIMARY']),
    /** ImageType values that refuse a series (LOCALIZER: a scout, which is ORIGINAL\PRIMARY too). */
    excludeImageType: z.array(upper).default(['LOCALIZER']),
    /** Accept a series with no ImageType at all (some PACS do not return it) instead of refusing it. */
    allowMissingImageType: z.boolean().default(false),
    /** When not empty, SeriesDescription must match one of these. */
    includeDescription: z.array(regex).default([]),
    /** SeriesDescription must match none of these. */
    excludeDescription: z.array(regex).default(DEFAULT_EXCLUDE_DESCRIPTION),
    /** Ranking: a series whose description matches one of these (a lung reconstruction) ranks first. */
    preferDescription: z.array(regex).default(DEFAULT_PREFER_DESCRIPTION),
    /** Ranking: a series whose ConvolutionKernel matches one of these (a lung kernel) ranks first. */
    preferKernel: z.array(regex).default(DEFAULT_PREFER_KERNEL),
  })
  .strict();

export type SeriesRulesDoc = z.output<typeof schema>;

export interface SeriesRules {
  doc: SeriesRulesDoc;
  includeDescription: RegExp[];
  excludeDescription: RegExp[];
  preferDescription: RegExp[];
  preferKernel: RegExp[];
}

export class SeriesRulesError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: invalid series rules:\n  ${problems.join('\n  ')}`);
    this.name = 'SeriesRulesError';
  }
}

/** Validates a rules document (null or {} gives the defaults); throws SeriesRulesError naming each bad key. */
export function parseSeriesRules(doc: unknown, file = '<series rules>'): SeriesRules {
  const r = schema.safeParse(doc ?? {});
  if (!r.success) {
    throw new SeriesRulesError(
      file,
      r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`),
    );
  }
  const d = r.data;
  const compile = (ps: string[]) => ps.map((p) => new RegExp(p, 'i'));
  return {
    doc: d,
    includeDescription: compile(d.includeDescription),
    excludeDescription: compile(d.excludeDescription),
    preferDescription: compile(d.preferDescription),
    preferKernel: compile(d.preferKernel),
  };
}

export function loadSeriesRules(file: string): SeriesRules {
  return parseSeriesRules(
    readYamlDocument(file, (problems) => new SeriesRulesError(file, problems)),
    file,
  );
}

export const DEFAULT_SERIES_RULES: SeriesRules = parseSeriesRules({});

/** Angle in degrees between the slice normal of ImageOrientationPatient and the patient z axis; undefined if invalid. */
export function normalTiltDeg(orientation: readonly number[]): number | undefined {
  if (orientation.length < 6 || orientation.some((v) => !Number.isFinite(v))) return undefined;
  const [rx, ry, rz, cx, cy, cz] = orientation as [number, number, number, number, number, number];
  const n = [ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx] as const;
  const len = Math.hypot(...n);
  if (Math.abs(Math.hypot(rx, ry, rz) - 1) > 0.01 || Math.abs(Math.hypot(cx, cy, cz) - 1) > 0.01 || Math.abs(len - 1) > 0.01) return undefined;
  return (Math.acos(Math.min(1, Math.abs(n[2]) / len)) * 180) / Math.PI;
}

const fmt = (mm: number) => `${Number(mm.toFixed(3))} mm`;
const label = (c: SeriesCandidate) => `series ${c.seriesNumber ?? '?'}${c.description ? ` "${c.description}"` : ''}`;

/** The thickness the range applies to: SliceThickness, or the measured spacing when SliceThickness is missing. */
function thicknessOf(c: SeriesCandidate): { mm: number; from: string } | undefined {
  if (c.sliceThickness !== undefined && c.sliceThickness > 0) return { mm: c.sliceThickness, from: 'SliceThickness' };
  if (c.sliceSpacing !== undefined && c.sliceSpacing > 0) return { mm: c.sliceSpacing, from: 'slice position spacing, SliceThickness missing' };
  return undefined;
}

/** Every rule the candidate fails, as sentences; empty when it fits. */
function refusals(c: SeriesCandidate, rules: SeriesRules): string[] {
  const d = rules.doc;
  const out: string[] = [];
  const modality = c.modality?.trim().toUpperCase();
  if (!modality) out.push('no Modality');
  else if (!d.modalities.includes(modality)) out.push(`modality ${modality} is not ${d.modalities.join(' or ')}`);

  if (c.imageType.length === 0) {
    if (!d.allowMissingImageType) out.push('no ImageType, so it cannot be shown to be ORIGINAL (allowMissingImageType is off)');
  } else {
    const types = c.imageType.map((t) => t.trim().toUpperCase());
    const missing = d.requireImageType.filter((t) => !types.includes(t));
    if (missing.length > 0) out.push(`ImageType ${types.join('\\')} lacks ${missing.join(', ')}`);
    const banned = d.excludeImageType.filter((t) => types.includes(t));
    if (banned.length > 0) out.push(`ImageType ${types.join('\\')} includes ${banned.join(', ')}`);
  }

  const desc = c.description ?? '';
  if (rules.includeDescription.length > 0 && !rules.includeDescription.some((r) => r.test(desc))) {
    out.push(`description "${desc}" matches none of the include patterns`);
  }
  const excluded = rules.excludeDescription.find((r) => r.test(desc));
  if (excluded) out.push(`description "${desc}" matches exclude pattern ${excluded}`);

  if (!c.orientation || c.orientation.length === 0) out.push('no ImageOrientationPatient, so it cannot be shown to be axial');
  else {
    const tilt = normalTiltDeg(c.orientation);
    if (tilt === undefined) out.push(`ImageOrientationPatient [${c.orientation.join(', ')}] is not two orthogonal unit vectors`);
    else if (tilt > d.axialToleranceDeg + 1e-9)
      out.push(`not axial: the slice normal is ${tilt.toFixed(1)}° from the patient z axis (at most ${d.axialToleranceDeg}°)`);
  }

  const t = thicknessOf(c);
  const { min, max } = d.sliceThicknessMm;
  if (!t) out.push('slice thickness unknown (no SliceThickness and no measured slice spacing)');
  else if (t.mm < min - 1e-6 || t.mm > max + 1e-6) out.push(`slice thickness ${fmt(t.mm)} (${t.from}) is outside ${min}–${max} mm`);
  if (c.sliceThickness !== undefined && c.sliceThickness > 0 && c.sliceSpacing !== undefined) {
    if (c.sliceSpacing > c.sliceThickness * d.maxSpacingToThicknessRatio + 1e-6) {
      out.push(
        `slices are ${fmt(c.sliceSpacing)} apart but only ${fmt(c.sliceThickness)} thick (gaps; at most ${d.maxSpacingToThicknessRatio}× the thickness)`,
      );
    }
  }

  if (c.numberOfInstances < d.minSlices) out.push(`${c.numberOfInstances} instance(s), fewer than ${d.minSlices}`);
  return out;
}

interface Ranked {
  c: SeriesCandidate;
  index: number;
  preferredBy?: string;
  thickness: number;
}

function preference(c: SeriesCandidate, rules: SeriesRules): string | undefined {
  const byDesc = c.description ? rules.preferDescription.find((r) => r.test(c.description as string)) : undefined;
  if (byDesc) return `description "${c.description}" matches ${byDesc}`;
  const byKernel = c.kernel ? rules.preferKernel.find((r) => r.test((c.kernel as string).trim())) : undefined;
  if (byKernel) return `kernel ${c.kernel} matches ${byKernel}`;
  return undefined;
}

/** Negative when a ranks before b: preferred first, then thinnest slices, then most instances, then SeriesNumber, then UID. */
function compare(a: Ranked, b: Ranked): number {
  if (Boolean(a.preferredBy) !== Boolean(b.preferredBy)) return a.preferredBy ? -1 : 1;
  if (Math.abs(a.thickness - b.thickness) > 1e-6) return a.thickness - b.thickness;
  if (a.c.numberOfInstances !== b.c.numberOfInstances) return b.c.numberOfInstances - a.c.numberOfInstances;
  const an = a.c.seriesNumber ?? Number.POSITIVE_INFINITY;
  const bn = b.c.seriesNumber ?? Number.POSITIVE_INFINITY;
  if (an !== bn) return an < bn ? -1 : 1;
  return a.c.seriesInstanceUid < b.c.seriesInstanceUid ? -1 : a.c.seriesInstanceUid > b.c.seriesInstanceUid ? 1 : 0;
}

/** Why `lower` ranks below `top`, in words. */
function whyBelow(lower: Ranked, top: Ranked): string {
  const who = label(top.c);
  if (Boolean(lower.preferredBy) !== Boolean(top.preferredBy)) return `${who} is a preferred lung reconstruction and this is not`;
  if (Math.abs(lower.thickness - top.thickness) > 1e-6) return `${who} has thinner slices (${fmt(top.thickness)} < ${fmt(lower.thickness)})`;
  if (lower.c.numberOfInstances !== top.c.numberOfInstances)
    return `same preference and thickness; ${who} has more instances (${top.c.numberOfInstances} > ${lower.c.numberOfInstances})`;
  return `tied on preference, thickness and instances; ${who} comes first by SeriesNumber/UID`;
}

/**
 * Chooses the series to analyse: every rule is checked for every candidate (so a refusal lists all its reasons),
 * then the accepted ones are ranked: preferred description/kernel first, then thinnest slices, then most instances.
 */
export function selectSeries(candidates: readonly SeriesCandidate[], rules: SeriesRules = DEFAULT_SERIES_RULES): SeriesSelection {
  const decisions: SeriesDecision[] = candidates.map((c) => {
    const reasons = refusals(c, rules);
    return { seriesInstanceUid: c.seriesInstanceUid, seriesNumber: c.seriesNumber, description: c.description, accepted: reasons.length === 0, reasons };
  });
  const ranked: Ranked[] = [];
  candidates.forEach((c, index) => {
    if (!decisions[index]?.accepted) return;
    ranked.push({ c, index, preferredBy: preference(c, rules), thickness: (thicknessOf(c) as { mm: number }).mm });
  });
  ranked.sort(compare);
  const top = ranked[0];
  ranked.forEach((r, k) => {
    const d = decisions[r.index] as SeriesDecision;
    const t = thicknessOf(r.c) as { mm: number; from: string };
    d.rank = k + 1;
    d.reasons = [
      k === 0 ? `chosen: rank 1 of ${ranked.length}` : `rank ${k + 1} of ${ranked.length}: ${whyBelow(r, top as Ranked)}`,
      r.preferredBy ? `preferred: ${r.preferredBy}` : 'not preferred: neither description nor kernel matches a lung pattern',
      `slice thickness ${fmt(t.mm)} (${t.from})`,
      `${r.c.numberOfInstances} instances`,
    ];
  });
  if (top) return { chosen: top.c, decisions };
  const reason =
    candidates.length === 0
      ? 'No series fits: the study has no series.'
      : `No series fits the selection rules: ${candidates
          .map((c, i) => `${label(c)} (${c.seriesInstanceUid}) was refused because ${(decisions[i] as SeriesDecision).reasons.join('; ')}`)
          .join('. ')}.`;
  return { decisions, reason };
}
