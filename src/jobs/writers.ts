/**
 * The result stages' writers, made from the configuration: the result set's objects (results/result-set.ts, the same
 * `ctgate analyze` writes as files) sent to their peers — SEG, key images (secondary captures), key object selection and
 * measurement report (SR) to the PACS (STOW-RS and/or C-STORE), FHIR to the chart, ORU^R01 to the EMR. Each is
 * idempotent (see the encoders), so a stage re-run never makes a second copy.
 */
import type { Bundle } from 'fhir/r4.js';
import type { Config } from '../config/index.js';
import { CTGATE_VERSION } from '../config/version.js';
import type { DimsePeer } from '../dicom/dcmtk.js';
import type { DicomWebClient } from '../dicomweb/client.js';
import type { Logger } from '../observability/log.js';
import type { ResultContext } from '../results/context.js';
import { FhirSender } from '../results/fhir/client.js';
import { type FhirMappings, loadFhirMappings } from '../results/fhir/mappings.js';
import { oruSenderOptions, sendOru } from '../results/oru/sender.js';
import { type DicomResults, dicomResults, oruParties, type ResultSeries, resultBundle, resultOru, resultSeries } from '../results/result-set.js';
import { storeSeriesDimse } from '../results/seg/dimse-store.js';
import { type SeriesToStore, type StoredSeries, storeSeries } from '../results/seg/store.js';
import type { StageOutputs } from './job-state.js';
import type { ResultWriters } from './screening.js';

export { CTGATE_VERSION };

/** How the write-seg stage's objects reach the PACS: STOW-RS (DICOMweb), C-STORE (DIMSE), or both. */
export interface ResultsTransport {
  transport: 'stow' | 'dimse' | 'both';
  /** The C-STORE destination; required unless the transport is stow. */
  dimse?: DimsePeer;
}

/** Stores one series the way the transport says; with both, STOW-RS first (its QIDO check confirms), then C-STORE. */
export type SeriesStore = (series: SeriesToStore, what: string) => Promise<StoredSeries>;

export function seriesStore(pacs: DicomWebClient, t: ResultsTransport = { transport: 'stow' }): SeriesStore {
  if (t.transport === 'stow') return (series, what) => storeSeries(pacs, series, what);
  const peer = t.dimse;
  if (!peer) throw new Error(`results transport ${t.transport} needs a C-STORE destination`);
  if (t.transport === 'dimse') return (series, what) => storeSeriesDimse(peer, series, what);
  return async (series, what) => {
    const stowed = await storeSeries(pacs, series, what);
    await storeSeriesDimse(peer, series, what);
    return stowed;
  };
}

/**
 * The write-seg stage: the result's DICOM objects (results/result-set.ts) in the order a viewer can use them — the
 * SEG, the key images (secondary captures, for viewers without SEG support) in a series of their own, the key object
 * selection (KOS, TID 2000) that flags the key CT slices and those images, then the measurement report (TID 1500 SR)
 * that points at the SEG. The report is written even without a SEG (no lesion, or not assessable: it then says so).
 * All are idempotent, so a re-run of the stage (e.g. after the key images failed) stores the same instances again, by
 * STOW-RS or C-STORE as `transport` says.
 */
export function segWriter(pacs: DicomWebClient, transport?: ResultsTransport): NonNullable<ResultWriters['seg']> {
  return storeDicomResults(seriesStore(pacs, transport));
}

/** The write-seg stage over any series store (the PACS, or a test's). */
export function storeDicomResults(store: SeriesStore): NonNullable<ResultWriters['seg']> {
  return async (ctx) => {
    const d = dicomResults(ctx);
    const { seg, keyImages, kos, sr } = d;
    if (seg) await store({ studyInstanceUid: seg.studyInstanceUid, seriesInstanceUid: seg.seriesInstanceUid, modality: 'SEG', instances: [seg] }, 'SEG');
    if (keyImages) await store(keyImages, 'key-image SC');
    if (kos) await store({ ...kos, instances: [kos] }, 'KOS');
    await store({ ...sr, instances: [sr] }, 'SR');
    return segStageOutput(d);
  };
}

/** What the write-seg stage records: the series it stored, which write-fhir lists in the ImagingStudy. */
export function segStageOutput(d: DicomResults): NonNullable<StageOutputs['write-seg']> {
  const s = resultSeries(d);
  if (!d.seg) return { skipped: d.absent.seg ?? 'no SEG', srSeriesInstanceUid: s.srSeriesInstanceUid };
  return {
    seriesInstanceUid: d.seg.seriesInstanceUid,
    sopInstanceUid: d.seg.sopInstanceUid,
    frames: d.seg.frames,
    ...(s.keyImages ? { keyImageSeriesInstanceUid: s.keyImages.seriesInstanceUid, keyImages: s.keyImages.instances } : {}),
    ...(s.kosSeriesInstanceUid ? { kosSeriesInstanceUid: s.kosSeriesInstanceUid } : {}),
    srSeriesInstanceUid: s.srSeriesInstanceUid,
  };
}

/**
 * The result series as the write-seg checkpoint names them (this job's, or those of the job whose analysis it shares);
 * a checkpoint of an older ctgate may lack some, and the ImagingStudy then lists only those it names.
 */
export function seriesOfSegStage(out: StageOutputs['write-seg']): ResultSeries {
  const stored = out && 'seriesInstanceUid' in out ? out : undefined;
  return {
    ...(stored ? { seg: { seriesInstanceUid: stored.seriesInstanceUid, sopInstanceUid: stored.sopInstanceUid } } : {}),
    ...(stored?.keyImageSeriesInstanceUid ? { keyImages: { seriesInstanceUid: stored.keyImageSeriesInstanceUid, instances: stored.keyImages ?? 0 } } : {}),
    ...(stored?.kosSeriesInstanceUid ? { kosSeriesInstanceUid: stored.kosSeriesInstanceUid } : {}),
    ...(out?.srSeriesInstanceUid ? { srSeriesInstanceUid: out.srSeriesInstanceUid } : {}),
  };
}

/** The write-fhir stage's bundle: the result's, listing the series write-seg stored. */
export function fhirStageBundle(ctx: ResultContext, maps: FhirMappings, seg: StageOutputs['write-seg']): Bundle {
  return resultBundle(ctx, maps, seriesOfSegStage(seg));
}

export function fhirWriter(config: Config, log: Logger): ResultWriters['fhir'] {
  const c = config.fhir;
  if (!c) return undefined;
  const sender = FhirSender.fromConfig(c, log);
  const maps = loadFhirMappings(config.resultMappingsFile);
  return async (ctx, seg) => {
    const sent = await sender.send(fhirStageBundle(ctx, maps, seg), ctx.jobId);
    const report = sent.resources.find((r) => r.resourceType === 'DiagnosticReport');
    if (!report) throw new Error('the FHIR server did not return the DiagnosticReport it stored');
    return { diagnosticReportId: report.id, resources: sent.resources.length };
  };
}

export function oruWriter(config: Config, log: Logger): ResultWriters['oru'] {
  const c = config.oru;
  if (!c) return undefined;
  const opts = oruSenderOptions(c, log);
  const parties = oruParties(config);
  return async (ctx) => {
    const d = await sendOru(resultOru(ctx, parties), ctx.jobId, opts);
    return { controlId: d.controlId, ackCode: d.ackCode, attempts: d.attempts, ...(d.unacked ? { unacked: d.unacked } : {}) };
  };
}
