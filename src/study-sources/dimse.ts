/**
 * A PACS without DICOMweb as a study source: C-FIND (DCMTK findscu, src/dicom/find.ts) finds the study by
 * StudyInstanceUID or accession number, then its series; C-GET (DCMTK getscu, src/dicom/get.ts) brings the chosen
 * series into a private temporary folder of this retrieval, which is read into a volume
 * (src/dicom/part10-series.ts) and deleted straight after, whatever happened. With `move`, C-MOVE (DCMTK movescu)
 * sends the series to ctgate's own C-STORE receiver instead (for a PACS that offers no C-GET), whose folder is read.
 *
 * The same rules as the DICOMweb source: UID first, else exactly one study with the accession; the study's instance
 * count (NumberOfStudyRelatedInstances, else the sum over its series) must stay unchanged for the stable time; the
 * series attributes C-FIND did not return stay unknown to selection. A PACS that does not answer (network, timeout,
 * abort) is polled through while the job waits and shown on the job (peer pacs-dimse); a refused C-FIND or C-GET, or
 * a C-GET that moves nothing, fails the step with that reason.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DimseError, type DimsePeer } from '../dicom/dcmtk.js';
import { candidateFromFoundSeries, findInstanceUids, findSeries, findSourceStudy, findStudies, matchValueProblem } from '../dicom/find.js';
import { cGetSeries, cMoveSeries } from '../dicom/get.js';
import { loadSeriesFiles, SeriesInputError } from '../dicom/part10-series.js';
import type { RetrievedSeries, RetrieveOptions } from '../dicomweb/retrieve.js';
import { type Lookup, pollUntilStable, type StudyQuery, type WaitOptions, type WaitResult } from '../dicomweb/study-finder.js';
import type { StudyPatient } from '../dicomweb/study-patient.js';
import type { StudyIndex } from '../dimse-receive/study-index.js';
import type { SourceStudy } from '../domain/study.js';
import { TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import type { SeriesCandidate } from '../imaging/series-selection.js';
import { type StudySource, StudySourceError } from './source.js';

const unique = (xs: string[]) => [...new Set(xs)];

export class DimseStudySource implements StudySource {
  readonly kind = 'dimse';
  readonly peer = 'pacs-dimse';
  readonly where = 'in the PACS (C-FIND)';
  readonly holder = 'the PACS (C-FIND)';

  constructor(
    private readonly pacs: DimsePeer,
    /**
     * tempDir: where C-GET's private folders are made (default the OS's); move: retrieve by C-MOVE to ctgate's own
     * receiver instead (its AE title, and the index of its receive folder).
     */
    private readonly opts: { tempDir?: string; move?: { destinationAe: string; index: StudyIndex } } = {},
  ) {}

  waitForStudy(q: StudyQuery, opts: WaitOptions): Promise<WaitResult> {
    return pollUntilStable(
      {
        holder: this.holder,
        look: (query) => this.look(query),
        transient: (e) => (e instanceof DimseError && e.retryable ? e.message : undefined),
      },
      q,
      opts,
    );
  }

  async look(q: StudyQuery): Promise<Lookup> {
    const uid = q.studyInstanceUid?.trim();
    if (uid) {
      if (matchValueProblem(uid)) return { status: 'unusable', reason: "the order's StudyInstanceUID cannot be matched by C-FIND" };
      const hit = (await findStudies(this.pacs, { studyInstanceUid: uid })).find((s) => s.studyInstanceUid === uid);
      if (!hit) return { status: 'not-found', reason: "no study with the order's StudyInstanceUID is in the PACS" };
      return {
        status: 'found',
        studyInstanceUid: uid,
        matchedBy: 'studyInstanceUid',
        instances: await this.count(uid, hit.numberOfStudyRelatedInstances),
        settled: true,
      };
    }
    const acc = q.accessionNumber?.trim();
    if (acc) {
      const problem = matchValueProblem(acc);
      if (problem) return { status: 'unusable', reason: `the order's AccessionNumber cannot be matched by C-FIND: it needs ${problem}` };
      // Exact match on our side too: some PACS match case-insensitively.
      const hits = (await findStudies(this.pacs, { accessionNumber: acc })).filter((s) => s.accessionNumber?.trim() === acc);
      const uids = unique(hits.map((s) => s.studyInstanceUid));
      if (uids.length === 0) return { status: 'not-found', reason: "no study with the order's AccessionNumber is in the PACS" };
      if (uids.length > 1) return { status: 'ambiguous', reason: `${uids.length} studies carry the order's AccessionNumber: ${uids.join(', ')}` };
      const hit = hits[0] as (typeof hits)[number];
      return {
        status: 'found',
        studyInstanceUid: hit.studyInstanceUid,
        matchedBy: 'accessionNumber',
        instances: await this.count(hit.studyInstanceUid, hit.numberOfStudyRelatedInstances),
        settled: true,
      };
    }
    return { status: 'unusable', reason: 'the order has neither StudyInstanceUID nor AccessionNumber, and the patient/date fallback is off' };
  }

  /** NumberOfStudyRelatedInstances when the PACS gave it, else the sum over its series. */
  private async count(studyInstanceUid: string, given: number | undefined): Promise<number> {
    if (given !== undefined) return given;
    return (await findSeries(this.pacs, studyInstanceUid)).reduce((n, s) => n + (s.numberOfSeriesRelatedInstances ?? 0), 0);
  }

  /** The study-level patient (a C-FIND at series level need not carry patient attributes), for the series too. */
  async patient(studyInstanceUid: string, _seriesInstanceUid?: string): Promise<StudyPatient | null> {
    const s = (await findStudies(this.pacs, { studyInstanceUid })).find((x) => x.studyInstanceUid === studyInstanceUid);
    if (!s) return null;
    const p: StudyPatient = { level: 'study' };
    if (s.patientId) p.patientId = s.patientId;
    if (s.issuerOfPatientId) p.issuerOfPatientId = s.issuerOfPatientId;
    if (s.patientName) p.patientName = s.patientName;
    if (s.patientBirthDate) p.patientBirthDate = s.patientBirthDate;
    return p;
  }

  async seriesCandidates(studyInstanceUid: string): Promise<SeriesCandidate[]> {
    const series = await findSeries(this.pacs, studyInstanceUid);
    return series
      .map(candidateFromFoundSeries)
      .sort(
        (a, b) =>
          (a.seriesNumber ?? Number.POSITIVE_INFINITY) - (b.seriesNumber ?? Number.POSITIVE_INFINITY) ||
          (a.seriesInstanceUid < b.seriesInstanceUid ? -1 : a.seriesInstanceUid > b.seriesInstanceUid ? 1 : 0),
      );
  }

  instanceUids(studyInstanceUid: string, seriesInstanceUid: string): Promise<string[]> {
    return findInstanceUids(this.pacs, studyInstanceUid, seriesInstanceUid);
  }

  /** C-GET into a private temporary folder, read, then the folder deleted; or C-MOVE to ctgate's receiver, then read. */
  async loadSeries(studyInstanceUid: string, seriesInstanceUid: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
    if (this.opts.move) return this.moveAndRead(studyInstanceUid, seriesInstanceUid, opts, this.opts.move);
    const dir = await mkdtemp(join(this.opts.tempDir ?? tmpdir(), 'ctgate-cget-'));
    try {
      const got = await cGetSeries(this.pacs, studyInstanceUid, seriesInstanceUid, dir);
      return await read(got.files, seriesInstanceUid, 'C-GET', opts);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * C-MOVE to ctgate's receiver: storescp wrote every instance before the PACS got its C-STORE response, so all are on
   * disk when the move answers; the receive folder is then rescanned and the series' files read (they stay there for
   * the receiver's retention, which the job holds while it runs).
   */
  private async moveAndRead(
    studyInstanceUid: string,
    seriesInstanceUid: string,
    opts: RetrieveOptions,
    move: { destinationAe: string; index: StudyIndex },
  ): Promise<RetrievedSeries> {
    const moved = await cMoveSeries(this.pacs, studyInstanceUid, seriesInstanceUid, move.destinationAe);
    await move.index.scan();
    const files = move.index.seriesFiles(studyInstanceUid, seriesInstanceUid);
    if (files.length === 0) {
      const name = this.pacs.label ?? 'the PACS';
      throw new DimseError('refused', `${name} answered the C-MOVE (${moved.status}) but ctgate's receiver got no instance of the series`, false);
    }
    return read(files, seriesInstanceUid, 'C-MOVE', opts);
  }

  async sourceStudy(studyInstanceUid: string): Promise<SourceStudy> {
    return (await findSourceStudy(this.pacs, studyInstanceUid)) ?? { studyInstanceUid };
  }
}

async function read(files: string[], seriesInstanceUid: string, how: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
  let loaded: Awaited<ReturnType<typeof loadSeriesFiles>>;
  try {
    loaded = await loadSeriesFiles(files, seriesInstanceUid);
  } catch (e) {
    if (e instanceof SeriesInputError) throw new StudySourceError(`series ${seriesInstanceUid} retrieved by ${how}: ${e.message}`, false);
    throw e;
  }
  opts.onProgress?.(loaded.slices.length, loaded.slices.length);
  return {
    volume: loaded.volume,
    plan: loaded.plan,
    slices: loaded.slices,
    decodedSyntaxes: loaded.transferSyntaxes.filter((ts) => TRANSFER_SYNTAXES.get(ts)?.codec),
  };
}
