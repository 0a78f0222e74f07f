/**
 * Codes the ORU^R01 carries. Checked against published code-system content (see each entry); local codes use the
 * HL7 local coding-system prefix 99 ("99CTG") where no standard observation code exists.
 */
import type { Code } from '../../dicom/code.js';

export const SYSTEM = { snomed: 'SCT', dicom: 'DCM', ucum: 'UCUM', local: '99CTG', yesNo: 'HL70136' } as const;

/** The impression values (OBX-5 of the impression OBX). */
export const IMPRESSION = {
  /**
   * SNOMED CT US edition concept (HL7 FHIR COVID-19 Library IG value set covid-19-snomed-diagnosis-vs). The
   * International Edition has no "COVID-19 pneumonia" concept; a site on another edition can map it locally.
   */
  covidPneumonia: { value: '882784691000119100', scheme: SYSTEM.snomed, meaning: 'Pneumonia caused by SARS-CoV-2' },
  /**
   * SNOMED CT International 281900007 No abnormality detected (finding): category no-significant-opacity (lesion
   * volume below the manifest's minOpacityMl).
   */
  noAbnormality: { value: '281900007', scheme: SYSTEM.snomed, meaning: 'No abnormality detected' },
  /**
   * SNOMED CT International 301230006 Lung finding (finding): category other-opacity — lesion present (another
   * pneumonia, tumour, nodule, scarring) that the classifier does not call COVID-19-like. Never the COVID-19 code,
   * never "no abnormality"; the OBX is flagged abnormal and the conclusion text says what was found. The same code
   * as the FHIR conclusion (mappings/results.yaml conclusions.otherOpacity, where it was checked).
   */
  lungFinding: { value: '301230006', scheme: SYSTEM.snomed, meaning: 'Lung finding' },
} as const satisfies Record<string, Code>;

/** OBX-3 observation identifiers. */
export const OBSERVATION = {
  /** DICOM 121073 Impression (as in the IPS radiology textual-observation value set). */
  impression: { value: '121073', scheme: SYSTEM.dicom, meaning: 'Impression' },
  /** DICOM 121077 Conclusion. */
  conclusion: { value: '121077', scheme: SYSTEM.dicom, meaning: 'Conclusion' },
  /** DICOM 110180 Study Instance UID: how a PACS/RIS links an ORU to the study. */
  studyInstanceUid: { value: '110180', scheme: SYSTEM.dicom, meaning: 'Study Instance UID' },
  notAssessableReason: { value: 'NOTASSESS', scheme: SYSTEM.local, meaning: 'Reason not assessable' },
  probability: { value: 'PROB', scheme: SYSTEM.local, meaning: 'COVID-19 pneumonia probability' },
  threshold: { value: 'THRESH', scheme: SYSTEM.local, meaning: 'Operating threshold' },
  lesionVolume: { value: 'LESVOL', scheme: SYSTEM.local, meaning: 'Lesion volume' },
  involvementTotal: { value: 'LUNGINV', scheme: SYSTEM.local, meaning: 'Lung involvement' },
  involvementLeft: { value: 'LUNGINV-L', scheme: SYSTEM.local, meaning: 'Left lung involvement' },
  involvementRight: { value: 'LUNGINV-R', scheme: SYSTEM.local, meaning: 'Right lung involvement' },
  lesionCount: { value: 'LESCOUNT', scheme: SYSTEM.local, meaning: 'Lesion count' },
  bilateral: { value: 'BILAT', scheme: SYSTEM.local, meaning: 'Bilateral lesions' },
  model: { value: 'MODEL', scheme: SYSTEM.local, meaning: 'Algorithm name and version' },
  resultPage: { value: 'RESULTURL', scheme: SYSTEM.local, meaning: 'Result page' },
} as const satisfies Record<string, Code>;

export const UNIT = {
  milliliter: { value: 'mL', scheme: SYSTEM.ucum, meaning: 'milliliter' },
  percent: { value: '%', scheme: SYSTEM.ucum, meaning: 'percent' },
} as const satisfies Record<string, Code>;
