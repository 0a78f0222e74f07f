import type { SeriesCandidate } from '../imaging/series-selection.js';
import type { DicomWebClient } from './client.js';
import { type DicomJson, num, nums, str, strs, TAG } from './dicom-json.js';
import { mapLimit } from './errors.js';

/** The DICOMweb calls candidate building needs (a DicomWebClient, or a wrapper that counts or fakes them). */
export type CandidateSource = Pick<DicomWebClient, 'searchSeries' | 'seriesMetadata'>;

/** Instance attributes selection needs, asked of the series-level QIDO. */
export const INSTANCE_FIELDS = [TAG.ImageType, TAG.SliceThickness, TAG.ConvolutionKernel, TAG.ImageOrientationPatient] as const;

/**
 * Attributes asked of the series-level QIDO: series attributes every PACS returns, then instance attributes that
 * Orthanc (1.10, DICOMweb plugin 1.7) fills in from one instance of each series, which saves a request per series.
 */
export const SERIES_INCLUDE_FIELDS = [TAG.Modality, TAG.SeriesDescription, TAG.SeriesNumber, TAG.NumberOfSeriesRelatedInstances, ...INSTANCE_FIELDS] as const;

export interface CandidateOptions {
  /**
   * Modalities whose series get instance-level detail (ImageType, orientation, thickness, kernel); other series
   * are listed from the series QIDO alone so that selection can still say why they were refused. Default CT.
   */
  detailModalities?: string[];
  /**
   * When to read a series' WADO-RS metadata (every instance) to measure the slice spacing from positions:
   * 'when-needed' (default) when the QIDO answers lack SliceThickness, ImageType or orientation; 'always' for every
   * detailed series, to also catch gaps between slices (interspaced HRCT); 'never' to use the QIDO answers alone.
   */
  measureSpacing?: 'when-needed' | 'always' | 'never';
  /** Series metadata requests in flight at once. Default 2. */
  concurrency?: number;
}

const has = (ds: DicomJson, tag: string) => (ds[tag]?.Value?.length ?? 0) > 0;

/** A candidate from one series-level QIDO result (plus its instance-level attributes when the PACS included them). */
export function candidateFromSeriesJson(ds: DicomJson): SeriesCandidate {
  const orientation = nums(ds, TAG.ImageOrientationPatient);
  return {
    seriesInstanceUid: str(ds, TAG.SeriesInstanceUID) ?? '',
    seriesNumber: num(ds, TAG.SeriesNumber),
    modality: str(ds, TAG.Modality)?.trim(),
    description: str(ds, TAG.SeriesDescription)?.trim(),
    imageType: strs(ds, TAG.ImageType).map((s) => s.trim()),
    sliceThickness: num(ds, TAG.SliceThickness),
    orientation: orientation.length >= 6 ? orientation.slice(0, 6) : undefined,
    numberOfInstances: num(ds, TAG.NumberOfSeriesRelatedInstances) ?? 0,
    kernel: str(ds, TAG.ConvolutionKernel)?.trim() || undefined,
  };
}

/** Median distance between adjacent slice positions along the slice normal; undefined with fewer than two. */
export function medianSpacing(instances: readonly DicomJson[], orientation: readonly number[]): number | undefined {
  if (orientation.length < 6) return undefined;
  const [rx, ry, rz, cx, cy, cz] = orientation as [number, number, number, number, number, number];
  const n = [ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx];
  const d = instances
    .map((i) => nums(i, TAG.ImagePositionPatient))
    .filter((p) => p.length >= 3)
    .map((p) => p.reduce((s, v, k) => s + v * (n[k] ?? 0), 0))
    .sort((a, b) => a - b);
  const gaps: number[] = [];
  for (let k = 1; k < d.length; k++) {
    const g = (d[k] as number) - (d[k - 1] as number);
    if (g > 1e-3) gaps.push(g);
  }
  if (gaps.length === 0) return undefined;
  gaps.sort((a, b) => a - b);
  return gaps[Math.floor(gaps.length / 2)];
}

/** Fills what the series QIDO lacked from the series' full metadata (one instance for the attributes, all for spacing). */
export function withMetadata(c: SeriesCandidate, instances: readonly DicomJson[]): SeriesCandidate {
  const first = instances[0];
  if (!first) return c;
  const orientation =
    c.orientation ?? (nums(first, TAG.ImageOrientationPatient).length >= 6 ? nums(first, TAG.ImageOrientationPatient).slice(0, 6) : undefined);
  return {
    ...c,
    modality: c.modality ?? str(first, TAG.Modality)?.trim(),
    description: c.description ?? str(first, TAG.SeriesDescription)?.trim(),
    imageType: c.imageType.length > 0 ? c.imageType : strs(first, TAG.ImageType).map((s) => s.trim()),
    sliceThickness: c.sliceThickness ?? num(first, TAG.SliceThickness),
    orientation,
    kernel: c.kernel ?? (str(first, TAG.ConvolutionKernel)?.trim() || undefined),
    numberOfInstances: Math.max(c.numberOfInstances, instances.length),
    sliceSpacing: orientation ? medianSpacing(instances, orientation) : undefined,
  };
}

/**
 * The series of a study as selection candidates, sorted by SeriesNumber. Requests, fewest first:
 * 1. one series QIDO with every field in SERIES_INCLUDE_FIELDS (comma-separated includefield);
 * 2. for each instance attribute that some series of `detailModalities` still lacks, one series QIDO with that
 *    field alone — a PACS (Orthanc 1.10 with plugin 1.7) ignores a comma-separated includefield whose commas
 *    arrive percent-encoded, as dicomweb-client sends them;
 * 3. WADO-RS series metadata only for a series still lacking ImageType, orientation or SliceThickness (the
 *    thickness is then measured from positions), or for every detailed series with measureSpacing 'always'.
 * PacsErrors propagate.
 */
export async function seriesCandidates(source: CandidateSource, studyInstanceUid: string, opts: CandidateOptions = {}): Promise<SeriesCandidate[]> {
  const detail = new Set((opts.detailModalities ?? ['CT']).map((m) => m.toUpperCase()));
  const mode = opts.measureSpacing ?? 'when-needed';
  const series = await source.searchSeries(studyInstanceUid, { includefield: SERIES_INCLUDE_FIELDS.join(',') });
  const detailed = series.filter((ds) => str(ds, TAG.SeriesInstanceUID) && detail.has((str(ds, TAG.Modality) ?? '').trim().toUpperCase()));
  if (mode !== 'always') {
    for (const tag of INSTANCE_FIELDS) {
      if (detailed.every((ds) => has(ds, tag))) continue;
      const answers = await source.searchSeries(studyInstanceUid, { includefield: tag });
      const byUid = new Map(answers.map((a) => [str(a, TAG.SeriesInstanceUID), a]));
      for (const ds of detailed) {
        const v = byUid.get(str(ds, TAG.SeriesInstanceUID))?.[tag];
        if (!has(ds, tag) && v?.Value?.length) ds[tag] = v;
      }
    }
  }
  const out = await mapLimit(series, opts.concurrency ?? 2, async (ds) => {
    const c = candidateFromSeriesJson(ds);
    if (!detailed.includes(ds) || mode === 'never') return c;
    const lacking = !has(ds, TAG.ImageType) || !has(ds, TAG.ImageOrientationPatient) || !has(ds, TAG.SliceThickness);
    if (mode === 'always' || lacking) return withMetadata(c, await source.seriesMetadata(studyInstanceUid, c.seriesInstanceUid));
    return c;
  });
  return out.sort(
    (a, b) =>
      (a.seriesNumber ?? Number.POSITIVE_INFINITY) - (b.seriesNumber ?? Number.POSITIVE_INFINITY) ||
      (a.seriesInstanceUid < b.seriesInstanceUid ? -1 : a.seriesInstanceUid > b.seriesInstanceUid ? 1 : 0),
  );
}
