import type { SourceStudy } from '../domain/study.js';
import type { SliceMeta } from '../imaging/slices.js';
import { type DicomJson, num, nums, str, TAG } from './dicom-json.js';

export class MetadataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetadataError';
  }
}

/** Reads the geometry and pixel description of one CT instance from its DICOM JSON metadata. */
export function sliceMetaFromJson(ds: DicomJson): SliceMeta {
  const sop = str(ds, TAG.SOPInstanceUID) ?? '';
  const need = (name: keyof typeof TAG, n: number): number[] => {
    const v = nums(ds, TAG[name]);
    if (v.length < n) throw new MetadataError(`instance ${sop || '(no SOPInstanceUID)'}: ${name} (${TAG[name]}) is missing or incomplete`);
    return v;
  };
  const position = need('ImagePositionPatient', 3);
  const orientation = need('ImageOrientationPatient', 6);
  const spacing = need('PixelSpacing', 2);
  return {
    sopInstanceUid: sop,
    seriesInstanceUid: str(ds, TAG.SeriesInstanceUID) ?? '',
    instanceNumber: num(ds, TAG.InstanceNumber),
    position: position.slice(0, 3) as SliceMeta['position'],
    orientation: orientation.slice(0, 6) as SliceMeta['orientation'],
    pixelSpacing: spacing.slice(0, 2) as SliceMeta['pixelSpacing'],
    rows: need('Rows', 1)[0] as number,
    columns: need('Columns', 1)[0] as number,
    bitsAllocated: num(ds, TAG.BitsAllocated) ?? 16,
    pixelRepresentation: num(ds, TAG.PixelRepresentation) ?? 0,
    samplesPerPixel: num(ds, TAG.SamplesPerPixel) ?? 1,
    rescaleSlope: num(ds, TAG.RescaleSlope) ?? 1,
    rescaleIntercept: num(ds, TAG.RescaleIntercept) ?? 0,
    sliceThickness: num(ds, TAG.SliceThickness),
    frameOfReferenceUid: str(ds, TAG.FrameOfReferenceUID),
    gantryTilt: num(ds, TAG.GantryDetectorTilt),
  };
}

/** PN values in DICOM JSON are objects ({ Alphabetic: "DOE^JANE" }); the Alphabetic group as stored. */
function personName(ds: DicomJson, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0] as { Alphabetic?: string } | string | undefined;
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.Alphabetic;
}

/** The patient and study attributes a derived object (the SEG) must repeat, from a study-level QIDO result. */
export function sourceStudyFromJson(ds: DicomJson): SourceStudy {
  const out: SourceStudy = { studyInstanceUid: str(ds, TAG.StudyInstanceUID) ?? '' };
  const set = <K extends keyof SourceStudy>(k: K, v: SourceStudy[K] | undefined) => {
    if (v !== undefined && v !== '') out[k] = v;
  };
  set('accessionNumber', str(ds, TAG.AccessionNumber));
  set('studyId', str(ds, '00200010'));
  set('studyDate', str(ds, TAG.StudyDate));
  set('studyTime', str(ds, '00080030'));
  set('studyDescription', str(ds, '00081030'));
  set('referringPhysicianName', personName(ds, '00080090'));
  set('patientName', personName(ds, '00100010'));
  set('patientId', str(ds, TAG.PatientID));
  set('issuerOfPatientId', str(ds, '00100021'));
  set('patientBirthDate', str(ds, '00100030'));
  set('patientSex', str(ds, '00100040'));
  return out;
}
