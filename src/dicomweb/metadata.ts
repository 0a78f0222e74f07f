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
