/**
 * What every result writer (DICOM SEG, FHIR, ORU^R01) is given for one finished job: the order, the source CT
 * study and series, and the analysis. The writers are pure functions of this (plus their config), so the
 * service, `ctgate analyze` and the tests produce byte-for-byte the same outputs from the same inputs.
 */
import { createHash } from 'node:crypto';
import type { Order } from '../domain/order.js';
import type { SourceStudy } from '../domain/study.js';
import type { SliceMeta } from '../imaging/slices.js';
import type { Geometry } from '../imaging/volume.js';
import { type Category, DEFAULT_MIN_OPACITY_ML } from '../inference/findings.js';
import type { Manifest } from '../inference/manifest.js';
import type { PipelineResult } from '../inference/pipeline.js';

export interface SourceSeries {
  seriesInstanceUid: string;
  seriesNumber?: number;
  seriesDescription?: string;
  frameOfReferenceUid: string;
  /** SOP Class UID of the CT images (CT Image Storage or Enhanced CT). */
  sopClassUid: string;
  /** Slices in volume z order: slices[k] is z index k of the mask and of `geometry`. */
  slices: SliceMeta[];
  geometry: Geometry;
}

export interface ModelRef {
  name: string;
  version: string;
}

/** A pipeline result as recorded: the models as name + version, and when it was made. */
export type Analysis = Pick<
  PipelineResult,
  'verdict' | 'category' | 'reason' | 'probability' | 'threshold' | 'findings' | 'lesionMask' | 'executionProvider'
> & {
  /** The models that made the result, in pipeline order (lung step, lesion model, classifier). */
  models: ModelRef[];
  /** ISO 8601 with time zone. */
  completedAt: string;
};

export interface KeyImage {
  /** z index in the source series. */
  sliceIndex: number;
  sopInstanceUid: string;
  lesionAreaMm2: number;
  png: Uint8Array;
}

/** ctgate's own addresses a result links to. */
export interface ResultLinks {
  /** Base URL of ctgate's DICOMweb proxy (the ImagingStudy Endpoint's address). */
  dicomWebBaseUrl: string;
  /** The job's result page, linked from the ORU and the report. */
  resultPageUrl?: string;
}

/**
 * The earlier order whose analysis a later order shares (same series, same model versions; jobs/analysis-reuse.ts).
 * Its SEG, key images and SR are the ones in the PACS: they carry the study's accession number as the PACS holds
 * it, and the SR's Referenced Request names this earlier order.
 */
export interface ReusedFrom {
  jobId: string;
  placerOrderNumber: string;
  fillerOrderNumber?: string;
  accessionNumber?: string;
  /** When the source job's analysis was made (its analysis.completedAt). */
  analyzedAt: string;
}

export interface ResultContext {
  /** Stable job id (hash of sender + placer order number, no PHI): the seed of every derived id and UID. */
  jobId: string;
  order: Order;
  study: SourceStudy;
  series: SourceSeries;
  analysis: Analysis;
  keyImages: KeyImage[];
  links: ResultLinks;
  /** Set when this order shares an earlier order's analysis and objects instead of running the models again. */
  reusedFrom?: ReusedFrom;
  /**
   * Set when the order's patient did not match the study's under the sender's rule and the rule's mode is `warn`:
   * which fields differ (names only, never values). Every result says so (identityNote).
   */
  patientIdentityWarning?: { differ: string[]; notComparable: string[] };
}

/** The Analysis of a pipeline run with the manifest's models (what the worker and `ctgate analyze` record). */
export function analysisOf(result: PipelineResult, manifest: Pick<Manifest, 'lung' | 'lesion' | 'classifier'>, completedAt = new Date()): Analysis {
  return {
    verdict: result.verdict,
    category: result.category,
    ...(result.reason ? { reason: result.reason } : {}),
    probability: result.probability,
    threshold: result.threshold,
    findings: result.findings,
    lesionMask: result.lesionMask,
    models: [manifest.lung, manifest.lesion, manifest.classifier].map((m) => ({ name: m.name, version: m.version })),
    executionProvider: result.executionProvider,
    completedAt: completedAt.toISOString(),
  };
}

/**
 * The category every result writer codes: 'not-assessable' whenever the verdict or the missing findings say so (a
 * category never outranks them), else the analysis's own. Writers code this, never the verdict alone: a negative may
 * hold opacity of another kind ('other-opacity'), which must not read as normal nor as COVID-19.
 */
export function resultCategory(a: Pick<Analysis, 'verdict' | 'category' | 'findings'>): Category {
  if (a.verdict === 'not-assessable' || a.findings === null || a.category === 'not-assessable') return 'not-assessable';
  // An analysis checkpointed before categories existed (Redis, analysis-codec.ts) has none: the old verdict rule.
  const category: Category =
    (a.category as Category | undefined) ??
    (a.verdict === 'positive' ? 'covid-19-like' : a.findings.lesionVolumeMl >= DEFAULT_MIN_OPACITY_ML ? 'other-opacity' : 'no-significant-opacity');
  if ((category === 'covid-19-like') !== (a.verdict === 'positive')) throw new Error(`analysis category ${category} with verdict ${a.verdict}`);
  return category;
}

/**
 * For an order whose patient did not match the study's (the sender's identity rule only warns): what the report
 * summary and the ORU's NTE say, naming the fields and never their values. Undefined when the patient matched.
 */
export function identityNote(ctx: Pick<ResultContext, 'patientIdentityWarning'>): string | undefined {
  const w = ctx.patientIdentityWarning;
  if (!w) return undefined;
  const parts = [w.differ.length ? `different: ${w.differ.join(', ')}` : '', w.notComparable.length ? `not comparable: ${w.notComparable.join(', ')}` : ''];
  return `Patient identity NOT confirmed: the study's DICOM patient does not match the order (${parts.filter(Boolean).join('; ') || 'no field could be compared'}). Check that these images are this patient's before using this result.`;
}

/**
 * For an order that shares an earlier order's analysis: what the result says about it, in the report summary and the
 * ORU's NTE. Undefined for an order whose own analysis it is.
 */
export function sharedAnalysisNote(ctx: Pick<ResultContext, 'reusedFrom'>): string | undefined {
  const r = ctx.reusedFrom;
  if (!r) return undefined;
  const acc = r.accessionNumber ? ` (accession ${r.accessionNumber})` : '';
  return `Analysis shared with order ${r.placerOrderNumber}${acc}, made ${r.analyzedAt}: same series, same model versions. The SEG, key images and measurement report in the PACS are that order's.`;
}

/**
 * What the result objects' UIDs are derived from (with the model versions): the source series and its content, the
 * sorted SOP Instance UIDs of its slices. A series that gained, lost or replaced an instance after an analysis gets
 * new result UIDs, so its new SEG and SR cannot collide with the earlier ones (a PACS keeps the first instance of a
 * UID and drops a different one sent later).
 */
export function sourceSeriesKey(series: Pick<SourceSeries, 'seriesInstanceUid' | 'slices'>): string {
  const h = createHash('sha256');
  for (const uid of series.slices.map((s) => s.sopInstanceUid).sort()) h.update(`${uid}\n`);
  return `${series.seriesInstanceUid}|content=${h.digest('hex').slice(0, 32)}`;
}
