/**
 * Vocabulary the FHIR and DICOM standards fix (identifier types, categories, interpretations, modalities):
 * not a site's choice, so it lives here rather than in mappings/results.yaml.
 */
import type { Coding } from 'fhir/r4.js';
import { SOP_CLASS } from '../../dicom/sop-classes.js';

export const SYSTEM = {
  v2IdentifierType: 'http://terminology.hl7.org/CodeSystem/v2-0203',
  v2DiagnosticService: 'http://terminology.hl7.org/CodeSystem/v2-0074',
  observationCategory: 'http://terminology.hl7.org/CodeSystem/observation-category',
  interpretation: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation',
  endpointConnectionType: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
  dicom: 'http://dicom.nema.org/resources/ontology/DCM',
  dicomUid: 'urn:dicom:uid',
  ucum: 'http://unitsofmeasure.org',
} as const;

const c = (system: string, code: string, display: string): Coding => ({ system, code, display });

export const IDENTIFIER_TYPE = {
  MR: c(SYSTEM.v2IdentifierType, 'MR', 'Medical record number'),
  PLAC: c(SYSTEM.v2IdentifierType, 'PLAC', 'Placer Identifier'),
  FILL: c(SYSTEM.v2IdentifierType, 'FILL', 'Filler Identifier'),
  ACSN: c(SYSTEM.v2IdentifierType, 'ACSN', 'Accession ID'),
} as const;

/** v2-0203 codes a PID-3.5 identifier type may carry through as-is. */
export const V2_IDENTIFIER_TYPES: Record<string, string> = {
  MR: 'Medical record number',
  PI: 'Patient internal identifier',
  PT: 'Patient external identifier',
  SS: 'Social Security number',
  NI: 'National unique individual identifier',
  NH: 'National Health Plan Identifier',
  JHN: 'Jurisdictional health number (Canada)',
  PPN: 'Passport number',
  DL: "Driver's license number",
  AN: 'Account number',
};

export const RADIOLOGY = c(SYSTEM.v2DiagnosticService, 'RAD', 'Radiology');
export const IMAGING = c(SYSTEM.observationCategory, 'imaging', 'Imaging');
export const POSITIVE = c(SYSTEM.interpretation, 'POS', 'Positive');
export const NEGATIVE = c(SYSTEM.interpretation, 'NEG', 'Negative');
export const WADO_RS = c(SYSTEM.endpointConnectionType, 'dicom-wado-rs', 'DICOM WADO-RS');
export const MODALITY_CT = c(SYSTEM.dicom, 'CT', 'Computed Tomography');
export const MODALITY_SEG = c(SYSTEM.dicom, 'SEG', 'Segmentation');
/** The key images (Secondary Capture) carry modality OT. */
export const MODALITY_OT = c(SYSTEM.dicom, 'OT', 'Other');
/** The measurement report (TID 1500 Comprehensive SR). */
export const MODALITY_SR = c(SYSTEM.dicom, 'SR', 'SR Document');
/** The key object selection (TID 2000) that flags the key slices and key images. */
export const MODALITY_KO = c(SYSTEM.dicom, 'KO', 'Key Object Selection');

/** DICOM Segmentation Storage SOP Class. */
export const SEGMENTATION_STORAGE = SOP_CLASS.segmentation;
