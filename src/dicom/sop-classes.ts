/** The SOP classes ctgate reads (CT) and writes (its results), by UID (DICOM PS3.4 Annex B.5). */
export const SOP_CLASS = {
  ctImage: '1.2.840.10008.5.1.4.1.1.2',
  segmentation: '1.2.840.10008.5.1.4.1.1.66.4',
  comprehensive3dSr: '1.2.840.10008.5.1.4.1.1.88.34',
  secondaryCapture: '1.2.840.10008.5.1.4.1.1.7',
  keyObjectSelection: '1.2.840.10008.5.1.4.1.1.88.59',
} as const;
