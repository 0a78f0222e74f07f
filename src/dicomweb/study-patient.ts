/**
 * The patient of a study as the PACS holds it: PatientID, IssuerOfPatientID, PatientName, PatientBirthDate, read
 * over QIDO-RS for the patient identity check (domain/patient-identity.ts compares them with the order's PID).
 *
 * PatientID, PatientName and PatientBirthDate are default attributes of a study-level QIDO answer (PS3.18 §10.6.3.3);
 * IssuerOfPatientID is not, so it is asked for with `includefield` (one field per request: see study-finder.ts).
 * At series level the patient attributes are not required of a PACS: when a series answer has none of them, the
 * study's are used.
 */
import type { DicomWebClient } from './client.js';
import { type DicomJson, str, TAG } from './dicom-json.js';

export type PatientSource = Pick<DicomWebClient, 'searchStudies' | 'searchSeries'>;

/** The study's patient attributes; absent when the PACS gave none (or an empty value). */
export interface StudyPatient {
  patientId?: string;
  issuerOfPatientId?: string;
  /** The Alphabetic component group of the PN. */
  patientName?: string;
  patientBirthDate?: string;
  /** Which level the attributes were read at. */
  level: 'study' | 'series';
}

const PATIENT_TAGS = [TAG.PatientID, TAG.IssuerOfPatientID, TAG.PatientName, TAG.PatientBirthDate] as const;

const value = (ds: DicomJson, tag: string) => {
  const v = str(ds, tag)?.trim();
  return v ? v : undefined;
};

/** The patient attributes of one QIDO result (study, series or instance level). */
export function patientFromJson(ds: DicomJson, level: StudyPatient['level'] = 'study'): StudyPatient {
  const p: StudyPatient = { level };
  const id = value(ds, TAG.PatientID);
  const issuer = value(ds, TAG.IssuerOfPatientID);
  const name = value(ds, TAG.PatientName);
  const birth = value(ds, TAG.PatientBirthDate);
  if (id) p.patientId = id;
  if (issuer) p.issuerOfPatientId = issuer;
  if (name) p.patientName = name;
  if (birth) p.patientBirthDate = birth;
  return p;
}

/** Whether a QIDO result carries any patient attribute at all (a series answer may carry none). */
function hasPatient(ds: DicomJson): boolean {
  return PATIENT_TAGS.some((t) => ds[t] !== undefined);
}

/**
 * The patient of `studyUid` (of its series `seriesUid` when given, falling back to the study when the series answer
 * has no patient attributes); null when the PACS does not list the study (or series). PacsErrors propagate.
 */
export async function readStudyPatient(source: PatientSource, studyUid: string, seriesUid?: string): Promise<StudyPatient | null> {
  if (seriesUid) {
    const series = (await source.searchSeries(studyUid, { SeriesInstanceUID: seriesUid, includefield: TAG.IssuerOfPatientID })).find(
      (s) => str(s, TAG.SeriesInstanceUID) === seriesUid,
    );
    if (!series) return null;
    if (hasPatient(series)) return patientFromJson(series, 'series');
  }
  const study = (await source.searchStudies({ StudyInstanceUID: studyUid, includefield: TAG.IssuerOfPatientID })).find(
    (s) => str(s, TAG.StudyInstanceUID) === studyUid,
  );
  return study ? patientFromJson(study, 'study') : null;
}
