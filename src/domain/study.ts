/** Patient and study attributes of the source CT, as the PACS holds them (the SEG must repeat them exactly). */
export interface SourceStudy {
  studyInstanceUid: string;
  accessionNumber?: string;
  studyId?: string;
  /** DICOM DA (YYYYMMDD) and TM as stored. */
  studyDate?: string;
  studyTime?: string;
  studyDescription?: string;
  referringPhysicianName?: string;
  patientName?: string;
  patientId?: string;
  issuerOfPatientId?: string;
  patientBirthDate?: string;
  /** DICOM CS: M, F, O or empty. */
  patientSex?: string;
}
