/**
 * The PACS over DICOMweb as a study source: QIDO-RS to find the study, its patient and its series, WADO-RS to pull
 * a series. Each method is the DICOMweb code the stages called before there were several sources, unchanged.
 */
import type { DicomWebClient } from '../dicomweb/client.js';
import { str, TAG } from '../dicomweb/dicom-json.js';
import { sourceStudyFromJson } from '../dicomweb/metadata.js';
import { type RetrievedSeries, type RetrieveOptions, retrieveVolume } from '../dicomweb/retrieve.js';
import { seriesCandidates } from '../dicomweb/series-candidates.js';
import { type StudyQuery, type WaitOptions, type WaitResult, waitForStableStudy } from '../dicomweb/study-finder.js';
import { readStudyPatient, type StudyPatient } from '../dicomweb/study-patient.js';
import type { SourceStudy } from '../domain/study.js';
import type { SeriesCandidate } from '../imaging/series-selection.js';
import type { StudySource } from './source.js';

export class DicomWebStudySource implements StudySource {
  readonly kind = 'dicomweb';
  readonly peer = 'pacs';
  readonly where = 'in the PACS';
  readonly holder = 'the PACS';

  constructor(private readonly client: DicomWebClient) {}

  waitForStudy(q: StudyQuery, opts: WaitOptions): Promise<WaitResult> {
    return waitForStableStudy(this.client, q, opts);
  }

  patient(studyInstanceUid: string, seriesInstanceUid?: string): Promise<StudyPatient | null> {
    return readStudyPatient(this.client, studyInstanceUid, seriesInstanceUid);
  }

  seriesCandidates(studyInstanceUid: string): Promise<SeriesCandidate[]> {
    return seriesCandidates(this.client, studyInstanceUid);
  }

  async instanceUids(studyInstanceUid: string, seriesInstanceUid: string): Promise<string[]> {
    return (await this.client.searchInstances(studyInstanceUid, seriesInstanceUid)).map((i) => str(i, TAG.SOPInstanceUID) ?? '').filter(Boolean);
  }

  loadSeries(studyInstanceUid: string, seriesInstanceUid: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
    return retrieveVolume(this.client, studyInstanceUid, seriesInstanceUid, opts);
  }

  /** The study's attributes as the PACS holds them (the results repeat them exactly); its UID alone if not listed. */
  async sourceStudy(studyInstanceUid: string): Promise<SourceStudy> {
    const studies = await this.client.searchStudies({ StudyInstanceUID: studyInstanceUid });
    const studyJson = studies.find((s) => sourceStudyFromJson(s).studyInstanceUid === studyInstanceUid);
    return studyJson ? sourceStudyFromJson(studyJson) : { studyInstanceUid };
  }
}
