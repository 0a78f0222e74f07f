/**
 * Coded concepts the SEG writer uses. Checked against the DICOM context groups (PS3.16), as rendered in
 * bvdh/dicom-terminology-in-fhir (input/fsh/ValueSet-dicom-cid-*.fsh), and against real SEGs:
 * - CID 7150 Segmentation Property Category: SCT 49755003 "Morphologically Abnormal Structure" (the meaning
 *   older editions and dcmqi examples spell "Morphologically Altered Structure"; same code).
 * - CID 7159 Lesion Segmentation Type (part of CID 7194, the types for that category): SCT 52988006 "Lesion".
 *   The model segments lesions of any kind (DESIGN.md), so "Lesion" is the honest type. Ground-glass opacity
 *   has no SNOMED code in the segmentation context groups; DICOM codes it as DCM 112120 "Ground glass opacity"
 *   (CID 6104 Abnormal Opacity Finding or Feature), which is not a segmentation property type: it is named in
 *   the segment description only.
 * - Anatomic region SCT 39607008 "Lung" (as in IDC/MHub lung SEGs made with dcmqi).
 * - DCM 113076 "Segmentation" (derivation) and DCM 121322 "Source image for image processing operation" (purpose
 *   of reference): as in dcmqi's and highdicom's SEGs (e.g. shared/data/dcmqi-ct-3slice/seg/liver.dcm).
 * - DCM 109102 "Processing Equipment" (CID 7005 Contributing Equipment Purposes of Reference).
 */
import type { Code } from '../../dicom/code.js';

export const CODES = {
  morphologicallyAbnormalStructure: { value: '49755003', scheme: 'SCT', meaning: 'Morphologically Abnormal Structure' },
  lesion: { value: '52988006', scheme: 'SCT', meaning: 'Lesion' },
  lung: { value: '39607008', scheme: 'SCT', meaning: 'Lung' },
  segmentation: { value: '113076', scheme: 'DCM', meaning: 'Segmentation' },
  sourceImageForProcessing: { value: '121322', scheme: 'DCM', meaning: 'Source image for image processing operation' },
  processingEquipment: { value: '109102', scheme: 'DCM', meaning: 'Processing Equipment' },
} as const satisfies Record<string, Code>;
