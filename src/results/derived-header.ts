/**
 * The attributes every object ctgate derives from a CT study shares (SEG, key images, SR): the patient and study
 * modules copied from the source study exactly, a new series, ctgate as the equipment, and the creation and
 * content date/time from the analysis. Each encoder adds its own IOD's modules to this.
 */
import type { NaturalizedDataset } from 'dcmjs';
import type { ResultContext } from './context.js';
import type { DicomDateTime } from './seg/datetime.js';

export const MANUFACTURER = 'ctgate';

export interface DerivedObjectOptions {
  /** The lesion model's name in analysis.models; default: the second entry (pipeline order: lung, lesion, classifier). */
  lesionModelName?: string;
  seriesNumber?: number;
  /** ctgate's own version, listed in SoftwareVersions beside the models'. */
  softwareVersion?: string;
  /** IANA zone for ContentDate/Time (the hospital's); default: the offset written in analysis.completedAt. */
  timeZone?: string;
  institutionName?: string;
}

export interface DerivedObjectIds {
  sopClassUid: string;
  sopInstanceUid: string;
  seriesInstanceUid: string;
  seriesNumber: number;
  seriesDescription: string;
  modality: string;
  instanceNumber: number;
  when: DicomDateTime;
  /** SoftwareVersions: ctgate's version and the models that made the object. */
  software: string[];
  institutionName?: string;
}

/** SoftwareVersions values: ctgate's version (when known), then each model as "name version". */
export function softwareVersions(models: { name: string; version: string }[], softwareVersion?: string): string[] {
  return [...(softwareVersion ? [`ctgate ${softwareVersion}`] : []), ...models.map((m) => `${m.name} ${m.version}`)];
}

export function derivedHeader(ctx: ResultContext, o: DerivedObjectIds): NaturalizedDataset {
  const { study } = ctx;
  return {
    SpecificCharacterSet: 'ISO_IR 192',
    InstanceCreationDate: o.when.date,
    InstanceCreationTime: o.when.time,
    SOPClassUID: o.sopClassUid,
    SOPInstanceUID: o.sopInstanceUid,
    StudyDate: study.studyDate ?? '',
    SeriesDate: o.when.date,
    ContentDate: o.when.date,
    StudyTime: study.studyTime ?? '',
    SeriesTime: o.when.time,
    ContentTime: o.when.time,
    AccessionNumber: study.accessionNumber ?? '',
    Modality: o.modality,
    Manufacturer: MANUFACTURER,
    ...(o.institutionName ? { InstitutionName: o.institutionName } : {}),
    ReferringPhysicianName: study.referringPhysicianName ?? '',
    ...(study.studyDescription ? { StudyDescription: study.studyDescription } : {}),
    SeriesDescription: o.seriesDescription,
    ManufacturerModelName: MANUFACTURER,
    PatientName: study.patientName ?? '',
    PatientID: study.patientId ?? '',
    ...(study.issuerOfPatientId ? { IssuerOfPatientID: study.issuerOfPatientId } : {}),
    PatientBirthDate: study.patientBirthDate ?? '',
    PatientSex: study.patientSex ?? '',
    SoftwareVersions: o.software,
    StudyInstanceUID: study.studyInstanceUid,
    SeriesInstanceUID: o.seriesInstanceUid,
    StudyID: study.studyId ?? '',
    SeriesNumber: String(o.seriesNumber),
    InstanceNumber: String(o.instanceNumber),
  };
}

/**
 * The Referenced Request of an SR or KOS: the order whose analysis made the object (for an order that shares an
 * earlier order's analysis, that earlier order: its objects are the ones in the PACS).
 */
export function referencedRequest(ctx: Pick<ResultContext, 'study' | 'order'>): NaturalizedDataset[] {
  const { study, order } = ctx;
  return [
    {
      StudyInstanceUID: study.studyInstanceUid,
      ReferencedStudySequence: [],
      AccessionNumber: study.accessionNumber ?? order.accessionNumber ?? '',
      PlacerOrderNumberImagingServiceRequest: order.placerOrderNumber,
      FillerOrderNumberImagingServiceRequest: order.fillerOrderNumber ?? '',
      RequestedProcedureID: '',
      RequestedProcedureDescription: order.procedure.text,
      RequestedProcedureCodeSequence: [],
    },
  ];
}
