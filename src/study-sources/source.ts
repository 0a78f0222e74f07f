/**
 * Where a job finds and reads the order's study: one interface, whatever the hospital's images come through.
 *
 * - dicomweb (dicomweb.ts): the PACS over QIDO-RS / WADO-RS (the default);
 * - received (received.ts): the studies pushed to ctgate's own C-STORE receiver (src/dimse-receive), read from its
 *   receive folder;
 * - dimse (dimse.ts): a PACS without DICOMweb, over C-FIND and C-GET (DCMTK findscu and getscu).
 *
 * Every source answers the same questions with the same rules: find the order's study by StudyInstanceUID, else by
 * AccessionNumber (exactly one study), and wait until it is stable; its patient attributes for the identity check;
 * its series as selection candidates; one series as a HU volume with its slices (instance UIDs, geometry); the study
 * attributes the results repeat. The stages (src/jobs/stages) use this interface only.
 *
 * No module here may import jobs, http or cli.
 */
import type { RetrievedSeries, RetrieveOptions } from '../dicomweb/retrieve.js';
import type { StudyQuery, WaitOptions, WaitResult } from '../dicomweb/study-finder.js';
import type { StudyPatient } from '../dicomweb/study-patient.js';
import type { SourceStudy } from '../domain/study.js';
import type { SeriesCandidate } from '../imaging/series-selection.js';

export type StudySourceKind = 'dicomweb' | 'received' | 'dimse';

export interface StudySource {
  readonly kind: StudySourceKind;
  /** Whose failure a problem of this source is, in a job's lastError (job-state.ts ErrorPeer). */
  readonly peer: 'pacs' | 'pacs-dimse' | 'internal';
  /** Where the study is looked for, for messages: "in the PACS", "at ctgate's C-STORE receiver". */
  readonly where: string;
  /** What lists the study, for messages: "the PACS", "ctgate's C-STORE receiver". */
  readonly holder: string;
  /**
   * Polls until the order's study exists and is stable (same rules as src/dicomweb/study-finder.ts
   * waitForStableStudy): 'ready', or 'timeout' at the deadline, 'ambiguous' when several studies match, 'unusable'
   * when the query cannot identify a study. Problems the next poll may not have (a PACS that does not answer) are
   * polled through and reported in onPoll's `error`; the others propagate.
   */
  waitForStudy(q: StudyQuery, opts: WaitOptions): Promise<WaitResult>;
  /** The study's (or its series') patient attributes; null when the source does not list it. */
  patient(studyInstanceUid: string, seriesInstanceUid?: string): Promise<StudyPatient | null>;
  /** The study's series as selection candidates, sorted by SeriesNumber. */
  seriesCandidates(studyInstanceUid: string): Promise<SeriesCandidate[]>;
  /** The SOP Instance UIDs of a series as the source lists them (the content an analysis is shared by). */
  instanceUids(studyInstanceUid: string, seriesInstanceUid: string): Promise<string[]>;
  /** One series as a HU volume, its slices in volume z order. */
  loadSeries(studyInstanceUid: string, seriesInstanceUid: string, opts: RetrieveOptions): Promise<RetrievedSeries>;
  /** The study attributes the results repeat (patient, accession, dates); its UID alone when not known. */
  sourceStudy(studyInstanceUid: string): Promise<SourceStudy>;
}

/**
 * A problem of a source that is not a PacsError or a DimseError (a received file that cannot be read, a series
 * that does not form a volume). `retryable` tells the stage runner whether another attempt can help.
 */
export class StudySourceError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'StudySourceError';
  }
}
