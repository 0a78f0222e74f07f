/**
 * The result stages' writers, made from the configuration: SEG, key images (secondary captures) and the measurement
 * report (SR) to the PACS (STOW-RS and/or C-STORE), FHIR to the chart, ORU^R01 to the EMR. Each is idempotent (see the encoders),
 * so a stage re-run never makes a second copy.
 */
import type { Config } from '../config/index.js';
import { CTGATE_VERSION } from '../config/version.js';
import type { DimsePeer } from '../dicom/dcmtk.js';
import type { DicomWebClient } from '../dicomweb/client.js';
import type { Logger } from '../observability/log.js';
import { buildResultBundle } from '../results/fhir/bundle.js';
import { FhirSender } from '../results/fhir/client.js';
import { loadFhirMappings } from '../results/fhir/mappings.js';
import { encodeKeyImages, NoKeyImagesError } from '../results/key-image-sc/encode.js';
import { encodeKos, NoKosError } from '../results/kos/encode.js';
import { encodeOru, oruControlId } from '../results/oru/encode.js';
import { oruSenderOptions, sendOru } from '../results/oru/sender.js';
import { storeSeriesDimse } from '../results/seg/dimse-store.js';
import { encodeSeg, NoSegError } from '../results/seg/encode.js';
import { type SeriesToStore, type StoredSeries, storeSeries } from '../results/seg/store.js';
import { encodeSr, type SegReference } from '../results/sr/encode.js';
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
 * The write-seg stage: the SEG, then the key images (secondary captures, for viewers without SEG support) in a
 * series of their own and the key object selection (KOS, TID 2000) that flags the key CT slices and those images,
 * then the measurement report (TID 1500 SR) that points at the SEG. The report is written even
 * without a SEG (no lesion, or not assessable: it then says so). All are idempotent, so a re-run of the stage
 * (e.g. after the key images failed) stores the same instances again, by STOW-RS or C-STORE as `transport` says.
 */
export function segWriter(pacs: DicomWebClient, transport?: ResultsTransport): NonNullable<ResultWriters['seg']> {
  const store = seriesStore(pacs, transport);
  return async (ctx) => {
    const storeSr = async (seg?: SegReference) => {
      const sr = encodeSr(ctx, seg, { softwareVersion: CTGATE_VERSION });
      return (await store({ ...sr, instances: [sr] }, 'SR')).seriesInstanceUid;
    };
    let seg: ReturnType<typeof encodeSeg>;
    try {
      seg = encodeSeg(ctx, { softwareVersion: CTGATE_VERSION });
    } catch (e) {
      if (e instanceof NoSegError) return { skipped: e.message, srSeriesInstanceUid: await storeSr() };
      throw e;
    }
    await store({ studyInstanceUid: seg.studyInstanceUid, seriesInstanceUid: seg.seriesInstanceUid, modality: 'SEG', instances: [seg] }, 'SEG');
    const stored = { seriesInstanceUid: seg.seriesInstanceUid, sopInstanceUid: seg.sopInstanceUid };
    let keyImages: ReturnType<typeof encodeKeyImages> | undefined;
    try {
      keyImages = encodeKeyImages(ctx, { softwareVersion: CTGATE_VERSION });
    } catch (e) {
      if (!(e instanceof NoKeyImagesError)) throw e;
    }
    const keyImageSeries = keyImages ? await store(keyImages, 'key-image SC') : undefined;
    let kos: ReturnType<typeof encodeKos> | undefined;
    try {
      // It references the secondary captures only when they were stored.
      kos = encodeKos(ctx, { softwareVersion: CTGATE_VERSION, referenceKeyImages: keyImageSeries !== undefined });
    } catch (e) {
      if (!(e instanceof NoKosError)) throw e;
    }
    const kosSeries = kos ? await store({ ...kos, instances: [kos] }, 'KOS') : undefined;
    const srSeriesInstanceUid = await storeSr(stored);
    return {
      seriesInstanceUid: stored.seriesInstanceUid,
      sopInstanceUid: stored.sopInstanceUid,
      frames: seg.frames,
      ...(keyImageSeries ? { keyImageSeriesInstanceUid: keyImageSeries.seriesInstanceUid, keyImages: keyImageSeries.instances.length } : {}),
      ...(kosSeries ? { kosSeriesInstanceUid: kosSeries.seriesInstanceUid } : {}),
      srSeriesInstanceUid,
    };
  };
}

export function fhirWriter(config: Config, log: Logger): ResultWriters['fhir'] {
  const c = config.fhir;
  if (!c) return undefined;
  const sender = FhirSender.fromConfig(c, log);
  const maps = loadFhirMappings(config.resultMappingsFile);
  return async (ctx, seg) => {
    const stored = seg && 'seriesInstanceUid' in seg ? seg : undefined;
    const segRef = stored ? { seriesInstanceUid: stored.seriesInstanceUid, sopInstanceUid: stored.sopInstanceUid } : undefined;
    const keyImages = stored?.keyImageSeriesInstanceUid ? { seriesInstanceUid: stored.keyImageSeriesInstanceUid, instances: stored.keyImages ?? 0 } : undefined;
    const srSeriesInstanceUid = seg?.srSeriesInstanceUid;
    const sent = await sender.send(buildResultBundle(ctx, maps, { seg: segRef, keyImages, srSeriesInstanceUid }), ctx.jobId);
    const report = sent.resources.find((r) => r.resourceType === 'DiagnosticReport');
    if (!report) throw new Error('the FHIR server did not return the DiagnosticReport it stored');
    return { diagnosticReportId: report.id, resources: sent.resources.length };
  };
}

export function oruWriter(config: Config, log: Logger): ResultWriters['oru'] {
  const c = config.oru;
  if (!c) return undefined;
  const opts = oruSenderOptions(c, log);
  return async (ctx) => {
    const message = encodeOru(ctx, {
      sendingApplication: c.sendingApplication,
      sendingFacility: c.sendingFacility,
      receivingApplication: c.receivingApplication,
      receivingFacility: c.receivingFacility,
      controlId: oruControlId(ctx.jobId),
      // The analysis time, not the clock: a re-run after a crash sends the very same message.
      now: new Date(ctx.analysis.completedAt),
      version: '2.5.1',
    });
    const d = await sendOru(message, ctx.jobId, opts);
    return { controlId: d.controlId, ackCode: d.ackCode, attempts: d.attempts, ...(d.unacked ? { unacked: d.unacked } : {}) };
  };
}
