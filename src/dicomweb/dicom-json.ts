/** The DICOM JSON model (PS3.18 F.2): tag "GGGGEEEE" → { vr, Value?, BulkDataURI? }. */
export type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string }>;

export function values(ds: DicomJson, tag: string): unknown[] {
  return ds[tag]?.Value ?? [];
}

export function str(ds: DicomJson, tag: string): string | undefined {
  const v = values(ds, tag)[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object' && 'Alphabetic' in (v as object)) return String((v as { Alphabetic: string }).Alphabetic);
  return String(v);
}

export function num(ds: DicomJson, tag: string): number | undefined {
  const v = values(ds, tag)[0];
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
  return Number.isFinite(n) ? n : undefined;
}

export function nums(ds: DicomJson, tag: string): number[] {
  return values(ds, tag)
    .map((v) => (typeof v === 'number' ? v : Number(v)))
    .filter((n) => Number.isFinite(n));
}

export function strs(ds: DicomJson, tag: string): string[] {
  return values(ds, tag).map((v) => String(v));
}

/** Tags ctgate reads, by keyword, to keep call sites legible. */
export const TAG = {
  ImageType: '00080008',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  AccessionNumber: '00080050',
  Modality: '00080060',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  IssuerOfPatientID: '00100021',
  PatientBirthDate: '00100030',
  SliceThickness: '00180050',
  GantryDetectorTilt: '00181120',
  ConvolutionKernel: '00181210',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfStudyRelatedInstances: '00201208',
  SamplesPerPixel: '00280002',
  PhotometricInterpretation: '00280004',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  BitsAllocated: '00280100',
  BitsStored: '00280101',
  PixelRepresentation: '00280103',
  PixelPaddingValue: '00280120',
  RescaleIntercept: '00281052',
  RescaleSlope: '00281053',
  TransferSyntaxUID: '00020010',
  AvailableTransferSyntaxUID: '00083002',
} as const;
