/**
 * Coded concepts of the measurement report (TID 1500). Where each was checked:
 * - DCM codes: pydicom 2.3's DICOM concept dictionary (pydicom.sr.codedict, generated from PS3.16), and their use in
 *   highdicom's TID 1500 classes (ImagingDataCommons/highdicom src/highdicom/sr/templates.py and content.py):
 *   126000 Imaging Measurement Report, 121049 Language of Content Item and Descendants, 121005 Observer Type,
 *   121007 Device, 121012–121015 Device Observer UID / Name / Manufacturer / Model Name, 121058 Procedure reported,
 *   111028 Image Library, 126200 Image Library Group, 121139 Modality, 112227 Frame of Reference UID,
 *   126010 Imaging Measurements, 125007 Measurement Group, 112039 Tracking Identifier, 112040 Tracking Unique
 *   Identifier, 121071 Finding, 111001 Algorithm Name, 111003 Algorithm Version, 121191 Referenced Segment,
 *   121232 Source series for segmentation, 121073 Impression.
 *   Note: DCM 126011 is "Derived Imaging Measurements", not "Qualitative Evaluations"; TID 1500's Qualitative
 *   Evaluations container is UMLS C0034375 (as highdicom writes it).
 * - SCT: 363698007 Finding Site, 272741003 Laterality, 7771000 Left, 24028007 Right, 51440002 Bilateral,
 *   118565006 Volume, 42798000 Area, 246206008 Number of lesions (observable entity): pydicom's SNOMED dictionary.
 *   260753009 Source: the concept name highdicom gives Image Library entries (TID 1601).
 * - LN 24627-2 "CT Chest": the DiagnosticReport code in mappings/results.yaml (checked there on loinc.org); CID 100
 *   (the procedures TID 1500 names) is extensible and already lists LOINC radiology codes (e.g. 25045-6).
 * - Language: en-US (RFC5646), CID 5000.
 * - The impression values (SCT) are the ORU's (src/results/oru/codes.ts), so SR, ORU and FHIR say the same thing.
 * - No standard concept names the share of lung volume with lesion, the classifier's probability, its operating
 *   threshold or why a study was not assessable: those use ctgate's local scheme 99CTG with the same codes as the
 *   ORU, declared in the Coding Scheme Identification Sequence.
 */
import type { Code } from '../../dicom/code.js';
import { OBSERVATION, SYSTEM } from '../oru/codes.js';

/** ctgate's local coding scheme (the ORU's "99CTG"), declared in the SR's Coding Scheme Identification Sequence. */
export const LOCAL_SCHEME = { designator: SYSTEM.local, name: 'ctgate local codes', organization: 'ctgate' } as const;

export const SR_CODES = {
  imagingMeasurementReport: { value: '126000', scheme: 'DCM', meaning: 'Imaging Measurement Report' },
  language: { value: '121049', scheme: 'DCM', meaning: 'Language of Content Item and Descendants' },
  englishUs: { value: 'en-US', scheme: 'RFC5646', meaning: 'English (United States)' },
  observerType: { value: '121005', scheme: 'DCM', meaning: 'Observer Type' },
  device: { value: '121007', scheme: 'DCM', meaning: 'Device' },
  deviceObserverUid: { value: '121012', scheme: 'DCM', meaning: 'Device Observer UID' },
  deviceObserverName: { value: '121013', scheme: 'DCM', meaning: 'Device Observer Name' },
  deviceObserverManufacturer: { value: '121014', scheme: 'DCM', meaning: 'Device Observer Manufacturer' },
  deviceObserverModelName: { value: '121015', scheme: 'DCM', meaning: 'Device Observer Model Name' },
  procedureReported: { value: '121058', scheme: 'DCM', meaning: 'Procedure reported' },
  ctChest: { value: '24627-2', scheme: 'LN', meaning: 'CT Chest' },
  imageLibrary: { value: '111028', scheme: 'DCM', meaning: 'Image Library' },
  imageLibraryGroup: { value: '126200', scheme: 'DCM', meaning: 'Image Library Group' },
  modality: { value: '121139', scheme: 'DCM', meaning: 'Modality' },
  ct: { value: 'CT', scheme: 'DCM', meaning: 'Computed Tomography' },
  frameOfReferenceUid: { value: '112227', scheme: 'DCM', meaning: 'Frame of Reference UID' },
  source: { value: '260753009', scheme: 'SCT', meaning: 'Source' },
  imagingMeasurements: { value: '126010', scheme: 'DCM', meaning: 'Imaging Measurements' },
  measurementGroup: { value: '125007', scheme: 'DCM', meaning: 'Measurement Group' },
  trackingIdentifier: { value: '112039', scheme: 'DCM', meaning: 'Tracking Identifier' },
  trackingUid: { value: '112040', scheme: 'DCM', meaning: 'Tracking Unique Identifier' },
  finding: { value: '121071', scheme: 'DCM', meaning: 'Finding' },
  findingSite: { value: '363698007', scheme: 'SCT', meaning: 'Finding Site' },
  laterality: { value: '272741003', scheme: 'SCT', meaning: 'Laterality' },
  left: { value: '7771000', scheme: 'SCT', meaning: 'Left' },
  right: { value: '24028007', scheme: 'SCT', meaning: 'Right' },
  bilateral: { value: '51440002', scheme: 'SCT', meaning: 'Bilateral' },
  algorithmName: { value: '111001', scheme: 'DCM', meaning: 'Algorithm Name' },
  algorithmVersion: { value: '111003', scheme: 'DCM', meaning: 'Algorithm Version' },
  algorithmParameters: { value: '111002', scheme: 'DCM', meaning: 'Algorithm Parameters' },
  imageRegion: { value: '111030', scheme: 'DCM', meaning: 'Image Region' },
  area: { value: '42798000', scheme: 'SCT', meaning: 'Area' },
  referencedSegment: { value: '121191', scheme: 'DCM', meaning: 'Referenced Segment' },
  sourceSeriesForSegmentation: { value: '121232', scheme: 'DCM', meaning: 'Source series for segmentation' },
  volume: { value: '118565006', scheme: 'SCT', meaning: 'Volume' },
  numberOfLesions: { value: '246206008', scheme: 'SCT', meaning: 'Number of lesions' },
  impression: { value: '121073', scheme: 'DCM', meaning: 'Impression' },
  qualitativeEvaluations: { value: 'C0034375', scheme: 'UMLS', meaning: 'Qualitative Evaluations' },
} as const satisfies Record<string, Code>;

/** Local concepts, the same as the ORU's OBX-3 (share of lung volume with lesion; laterality is a modifier here). */
export const LOCAL_CODES = {
  lungInvolvement: OBSERVATION.involvementTotal,
  probability: OBSERVATION.probability,
  threshold: OBSERVATION.threshold,
  notAssessableReason: OBSERVATION.notAssessableReason,
} as const satisfies Record<string, Code>;

/** UCUM units. */
export const SR_UNITS = {
  milliliter: { value: 'ml', scheme: 'UCUM', meaning: 'milliliter' },
  squareMillimeter: { value: 'mm2', scheme: 'UCUM', meaning: 'square millimeter' },
  percent: { value: '%', scheme: 'UCUM', meaning: 'percent' },
  lesions: { value: '{lesions}', scheme: 'UCUM', meaning: 'lesions' },
  noUnits: { value: '1', scheme: 'UCUM', meaning: 'no units' },
} as const satisfies Record<string, Code>;
