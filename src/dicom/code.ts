/**
 * One coded concept for every result: DICOM code sequences (SEG, SR, KOS, key images) and HL7 v2 coded elements
 * (ORU CE/CWE: identifier ^ text ^ coding system). The schemes ctgate uses (SCT, DCM, LN, UCUM, its local 99CTG) are
 * both DICOM Coding Scheme Designators and HL7 table 0396 names, so one value serves both.
 */
export interface Code {
  value: string;
  /** Coding Scheme Designator (DICOM) = coding system name (HL7 v2). */
  scheme: string;
  /** Code Meaning (DICOM) = text (HL7 v2). */
  meaning: string;
}

/**
 * A Code as a naturalized DICOM code sequence item (Code Sequence Macro). A value longer than 16 characters (Code
 * Value is SH), e.g. a SNOMED CT extension concept id, goes in Long Code Value (UC) instead (PS3.3 8.1).
 */
export function codeItem(c: Code): Record<string, string> {
  const value: Record<string, string> = c.value.length > 16 ? { LongCodeValue: c.value } : { CodeValue: c.value };
  return { ...value, CodingSchemeDesignator: c.scheme, CodeMeaning: c.meaning };
}
