/**
 * Everything one result is, from its ResultContext alone: the DICOM objects (SEG, key-image secondary captures, key
 * object selection, measurement report), the FHIR transaction and the ORU^R01. The worker stores them (PACS, FHIR
 * server, MLLP; one stage each) and `ctgate analyze` writes them as files, so both hand out the very same objects:
 * which objects exist, their UIDs and ids, and the software version they carry are decided here and nowhere else.
 */
import type { Bundle } from 'fhir/r4.js';
import type { Config } from '../config/index.js';
import { CTGATE_VERSION } from '../config/version.js';
import type { ResultContext } from './context.js';
import { buildResultBundle } from './fhir/bundle.js';
import type { FhirMappings } from './fhir/mappings.js';
import { type EncodedKeyImages, encodeKeyImages, NoKeyImagesError } from './key-image-sc/encode.js';
import { type EncodedKos, encodeKos, NoKosError } from './kos/encode.js';
import { encodeOru, oruControlId } from './oru/encode.js';
import { type EncodedSeg, encodeSeg, NoSegError } from './seg/encode.js';
import { type EncodedSr, encodeSr } from './sr/encode.js';

/** The DICOM objects of a result. Without a SEG there are no key images nor KOS; the SR is always there. */
export interface DicomResults {
  seg?: EncodedSeg;
  keyImages?: EncodedKeyImages;
  kos?: EncodedKos;
  sr: EncodedSr;
  /** Why an object is absent (no lesion, not assessable); without a SEG, only the SEG's reason. */
  absent: { seg?: string; keyImages?: string; kos?: string };
}

/** The result series beside the CT, as the FHIR ImagingStudy lists them: those stored (worker) or written (analyze). */
export interface ResultSeries {
  seg?: { seriesInstanceUid: string; sopInstanceUid: string };
  keyImages?: { seriesInstanceUid: string; instances: number };
  kosSeriesInstanceUid?: string;
  srSeriesInstanceUid?: string;
}

/** MSH-3..6 of the ORU. */
export interface OruParties {
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication?: string;
  receivingFacility?: string;
}

/** The ORU's MSH-3..6 as configured; without an ORU peer (`ctgate analyze`), ctgate's own names as the sender. */
export function oruParties(config: Pick<Config, 'oru' | 'appName' | 'facilityName'>): OruParties {
  const c = config.oru;
  return {
    sendingApplication: c?.sendingApplication ?? config.appName,
    sendingFacility: c?.sendingFacility ?? config.facilityName,
    receivingApplication: c?.receivingApplication,
    receivingFacility: c?.receivingFacility,
  };
}

/** The software version every DICOM object names (SoftwareVersions: "ctgate <version>", then the models). */
export const RESULT_SOFTWARE_VERSION = CTGATE_VERSION;

/** The object, or why there is none: the encoder's own "nothing to encode" error (no lesion, not assessable). */
function orAbsent<T>(absence: new (...args: never[]) => Error, encode: () => T): T | { absent: string } {
  try {
    return encode();
  } catch (e) {
    if (e instanceof absence) return { absent: e.message };
    throw e;
  }
}

const isAbsent = <T extends object>(r: T | { absent: string }): r is { absent: string } => 'absent' in r;

/** The DICOM objects, encoded with ctgate's version; the SR points at the SEG and the KOS at the key images. */
export function dicomResults(ctx: ResultContext): DicomResults {
  const softwareVersion = RESULT_SOFTWARE_VERSION;
  const seg = orAbsent(NoSegError, () => encodeSeg(ctx, { softwareVersion }));
  if (isAbsent(seg)) {
    // Without a lesion there is nothing to point at; the report says so (no lesion, or why not assessable).
    return { sr: encodeSr(ctx, undefined, { softwareVersion }), absent: { seg: seg.absent } };
  }
  const keyImages = orAbsent(NoKeyImagesError, () => encodeKeyImages(ctx, { softwareVersion }));
  const withKeyImages = !isAbsent(keyImages);
  // It references the secondary captures only when there are some.
  const kos = orAbsent(NoKosError, () => encodeKos(ctx, { softwareVersion, referenceKeyImages: withKeyImages }));
  const sr = encodeSr(ctx, { seriesInstanceUid: seg.seriesInstanceUid, sopInstanceUid: seg.sopInstanceUid }, { softwareVersion });
  return {
    seg,
    ...(withKeyImages ? { keyImages } : {}),
    ...(isAbsent(kos) ? {} : { kos }),
    sr,
    absent: { ...(isAbsent(keyImages) ? { keyImages: keyImages.absent } : {}), ...(isAbsent(kos) ? { kos: kos.absent } : {}) },
  };
}

export function resultSeries(d: DicomResults): ResultSeries {
  return {
    ...(d.seg ? { seg: { seriesInstanceUid: d.seg.seriesInstanceUid, sopInstanceUid: d.seg.sopInstanceUid } } : {}),
    ...(d.keyImages ? { keyImages: { seriesInstanceUid: d.keyImages.seriesInstanceUid, instances: d.keyImages.instances.length } } : {}),
    ...(d.kos ? { kosSeriesInstanceUid: d.kos.seriesInstanceUid } : {}),
    srSeriesInstanceUid: d.sr.seriesInstanceUid,
  };
}

/** The FHIR transaction; its ImagingStudy lists the CT and the result series given. */
export function resultBundle(ctx: ResultContext, maps: FhirMappings, series: ResultSeries): Bundle {
  return buildResultBundle(ctx, maps, {
    seg: series.seg,
    keyImages: series.keyImages,
    kosSeriesInstanceUid: series.kosSeriesInstanceUid,
    srSeriesInstanceUid: series.srSeriesInstanceUid,
  });
}

/** The ORU^R01 (segments joined by CR, as MLLP sends it). */
export function resultOru(ctx: ResultContext, parties: OruParties): string {
  return encodeOru(ctx, {
    sendingApplication: parties.sendingApplication,
    sendingFacility: parties.sendingFacility,
    receivingApplication: parties.receivingApplication,
    receivingFacility: parties.receivingFacility,
    controlId: oruControlId(ctx.jobId),
    // The analysis time, not the clock: a re-run after a crash sends the very same message.
    now: new Date(ctx.analysis.completedAt),
    version: '2.5.1',
  });
}

export interface ResultSet {
  dicom: DicomResults;
  series: ResultSeries;
  bundle: Bundle;
  oru: string;
}

/** The whole result at once (`ctgate analyze`); the worker makes the same parts stage by stage. */
export function resultSet(ctx: ResultContext, opts: { fhirMappings: FhirMappings; oru: OruParties }): ResultSet {
  const dicom = dicomResults(ctx);
  const series = resultSeries(dicom);
  return { dicom, series, bundle: resultBundle(ctx, opts.fhirMappings, series), oru: resultOru(ctx, opts.oru) };
}
