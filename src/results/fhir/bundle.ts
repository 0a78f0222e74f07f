import type { Bundle, BundleEntry, FhirResource } from 'fhir/r4.js';
import type { ResultContext } from '../context.js';
import { deviceEntry, deviceId } from './device.js';
import { stableId, urnUuid } from './ids.js';
import { endpointEntry, endpointId, imagingStudyEntry, imagingStudyId } from './imaging-study.js';
import { type BuildInput, type KeyImageSeriesRef, modelsKey, type Refs, type SegSeriesRef } from './input.js';
import type { FhirMappings } from './mappings.js';
import { observationEntries } from './observations.js';
import { patientEntry } from './patient.js';
import { reportEntry } from './report.js';
import { serviceRequestEntry } from './service-request.js';

export interface BundleOptions {
  /** The SEG series, when the SEG writer stored one. */
  seg?: SegSeriesRef;
  /** The key-image series, when stored. */
  keyImages?: KeyImageSeriesRef;
  /** The key object selection's series, when stored. */
  kosSeriesInstanceUid?: string;
  /** The measurement report's series, when stored. */
  srSeriesInstanceUid?: string;
}

/**
 * One FHIR transaction with everything a job's result puts in the chart. Posting it again changes nothing but
 * versions: Patient and ServiceRequest are conditional creates on their identifiers, every other resource is a
 * PUT under an id derived from business keys (job id, model versions, StudyInstanceUID), never from patient data.
 */
export function buildResultBundle(ctx: ResultContext, maps: FhirMappings, opts: BundleOptions = {}): Bundle {
  const refs: Refs = {
    // Only bundle-local names for the conditional ones; the server resolves them to the chart's resources.
    patient: urnUuid(stableId('Patient', ctx.jobId)),
    serviceRequest: urnUuid(stableId('ServiceRequest', ctx.jobId)),
    endpoint: urnUuid(endpointId(ctx.links.dicomWebBaseUrl)),
    device: urnUuid(deviceId(modelsKey(ctx))),
    imagingStudy: urnUuid(imagingStudyId(ctx.study.studyInstanceUid)),
  };
  const input: BuildInput = {
    ctx,
    maps,
    refs,
    seg: opts.seg,
    keyImages: opts.keyImages,
    kosSeriesInstanceUid: opts.kosSeriesInstanceUid,
    srSeriesInstanceUid: opts.srSeriesInstanceUid,
  };
  const observations = observationEntries(input);
  const entries: BundleEntry<FhirResource>[] = [
    patientEntry(input),
    serviceRequestEntry(input),
    endpointEntry(input),
    deviceEntry(input),
    imagingStudyEntry(input),
    ...observations,
    reportEntry(
      input,
      observations.map((o) => ({ reference: o.fullUrl as string })),
    ),
  ];
  return { resourceType: 'Bundle', type: 'transaction', entry: entries };
}
