/**
 * Codes the ORU^R01 carries. Checked against published code-system content (see each entry); local codes use the
 * HL7 local coding-system prefix 99 ("99CTG") where no standard observation code exists.
 */
export interface Coded {
  code: string;
  text: string;
  /** HL7 table 0396 coding-system name. */
  system: string;
}

export const SYSTEM = { snomed: 'SCT', dicom: 'DCM', ucum: 'UCUM', local: '99CTG', yesNo: 'HL70136' } as const;

/** The impression values (OBX-5 of the impression OBX). */
export const IMPRESSION = {
  /**
   * SNOMED CT US edition concept (HL7 FHIR COVID-19 Library IG value set covid-19-snomed-diagnosis-vs). The
   * International Edition has no "COVID-19 pneumonia" concept; a site on another edition can map it locally.
   */
  covidPneumonia: { code: '882784691000119100', text: 'Pneumonia caused by SARS-CoV-2', system: SYSTEM.snomed },
  /**
   * SNOMED CT International 281900007 No abnormality detected (finding): category no-significant-opacity (lesion
   * volume below the manifest's minOpacityMl).
   */
  noAbnormality: { code: '281900007', text: 'No abnormality detected', system: SYSTEM.snomed },
  /**
   * SNOMED CT International 301230006 Lung finding (finding): category other-opacity — lesion present (another
   * pneumonia, tumour, nodule, scarring) that the classifier does not call COVID-19-like. Never the COVID-19 code,
   * never "no abnormality"; the OBX is flagged abnormal and the conclusion text says what was found. The same code
   * as the FHIR conclusion (mappings/results.yaml conclusions.otherOpacity, where it was checked).
   */
  lungFinding: { code: '301230006', text: 'Lung finding', system: SYSTEM.snomed },
} as const satisfies Record<string, Coded>;

/** OBX-3 observation identifiers. */
export const OBSERVATION = {
  /** DICOM 121073 Impression (as in the IPS radiology textual-observation value set). */
  impression: { code: '121073', text: 'Impression', system: SYSTEM.dicom },
  /** DICOM 121077 Conclusion. */
  conclusion: { code: '121077', text: 'Conclusion', system: SYSTEM.dicom },
  /** DICOM 110180 Study Instance UID: how a PACS/RIS links an ORU to the study. */
  studyInstanceUid: { code: '110180', text: 'Study Instance UID', system: SYSTEM.dicom },
  notAssessableReason: { code: 'NOTASSESS', text: 'Reason not assessable', system: SYSTEM.local },
  probability: { code: 'PROB', text: 'COVID-19 pneumonia probability', system: SYSTEM.local },
  threshold: { code: 'THRESH', text: 'Operating threshold', system: SYSTEM.local },
  lesionVolume: { code: 'LESVOL', text: 'Lesion volume', system: SYSTEM.local },
  involvementTotal: { code: 'LUNGINV', text: 'Lung involvement', system: SYSTEM.local },
  involvementLeft: { code: 'LUNGINV-L', text: 'Left lung involvement', system: SYSTEM.local },
  involvementRight: { code: 'LUNGINV-R', text: 'Right lung involvement', system: SYSTEM.local },
  lesionCount: { code: 'LESCOUNT', text: 'Lesion count', system: SYSTEM.local },
  bilateral: { code: 'BILAT', text: 'Bilateral lesions', system: SYSTEM.local },
  model: { code: 'MODEL', text: 'Algorithm name and version', system: SYSTEM.local },
  resultPage: { code: 'RESULTURL', text: 'Result page', system: SYSTEM.local },
} as const satisfies Record<string, Coded>;

export const UNIT = {
  milliliter: { code: 'mL', text: 'milliliter', system: SYSTEM.ucum },
  percent: { code: '%', text: 'percent', system: SYSTEM.ucum },
} as const satisfies Record<string, Coded>;
