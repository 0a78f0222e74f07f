/**
 * The studies pushed to ctgate's C-STORE receiver (src/dimse-receive) as a study source: the receive folder's index
 * (rescanned before each look) finds the study by StudyInstanceUID or AccessionNumber, says whether it is stable
 * (no instance for CTGATE_DIMSE_STABLE_S and no file still being written) and lists its series; a series is read
 * from its files (src/dicom/part10-series.ts), as `ctgate analyze` reads them.
 *
 * The same rules as the DICOMweb source: UID first, else exactly one study with the accession (several are
 * ambiguous); the study must also keep its instance count for CTGATE_STUDY_STABLE_MS; series selection gets the
 * same attributes (ImageType, SliceThickness, orientation, kernel; the slice spacing measured only when one of the
 * first three is missing, as with a PACS whose QIDO lacks them). Messages name identifiers by kind, never by value.
 */
import { readFile } from 'node:fs/promises';
import { loadSeriesFiles, readInstance, SeriesInputError } from '../dicom/part10-series.js';
import { TAG } from '../dicomweb/dicom-json.js';
import type { RetrievedSeries, RetrieveOptions } from '../dicomweb/retrieve.js';
import { medianSpacing } from '../dicomweb/series-candidates.js';
import { type Lookup, pollUntilStable, type StudyQuery, type WaitOptions, type WaitResult } from '../dicomweb/study-finder.js';
import type { StudyPatient } from '../dicomweb/study-patient.js';
import { patientFromHeader, type ReceivedPatient, type ReceivedStudy, readHeader, type StudyIndex } from '../dimse-receive/study-index.js';
import type { SourceStudy } from '../domain/study.js';
import { TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import type { SeriesCandidate } from '../imaging/series-selection.js';
import type { Logger } from '../observability/log.js';
import { type StudySource, StudySourceError } from './source.js';

const unique = (xs: string[]) => [...new Set(xs)];

function studyPatient(p: ReceivedPatient, level: StudyPatient['level']): StudyPatient {
  return { level, ...p };
}

export class ReceivedStudySource implements StudySource {
  readonly kind = 'received';
  readonly peer = 'internal';
  readonly where = "at ctgate's C-STORE receiver";
  readonly holder = "ctgate's C-STORE receiver";

  constructor(
    private readonly index: StudyIndex,
    private readonly log?: Logger,
  ) {}

  waitForStudy(q: StudyQuery, opts: WaitOptions): Promise<WaitResult> {
    return pollUntilStable(
      {
        holder: this.holder,
        look: (query) => this.look(query),
        // The receive folder is local: a failure to read it is not a peer that may answer next time.
        transient: () => undefined,
      },
      q,
      opts,
    );
  }

  /** One look at the receive folder for the order's study. */
  async look(q: StudyQuery): Promise<Lookup> {
    await this.index.scan();
    const uid = q.studyInstanceUid?.trim();
    if (uid) {
      const hit = this.index.findStudies({ studyInstanceUid: uid })[0];
      if (!hit) return { status: 'not-found', reason: "no study with the order's StudyInstanceUID has been received" };
      return found(hit, 'studyInstanceUid');
    }
    const acc = q.accessionNumber?.trim();
    if (acc) {
      const hits = this.index.findStudies({ accessionNumber: acc });
      const uids = unique(hits.map((s) => s.studyInstanceUid));
      if (uids.length === 0) return { status: 'not-found', reason: "no study with the order's AccessionNumber has been received" };
      if (uids.length > 1) return { status: 'ambiguous', reason: `${uids.length} studies carry the order's AccessionNumber: ${uids.join(', ')}` };
      return found(hits[0] as ReceivedStudy, 'accessionNumber');
    }
    return { status: 'unusable', reason: 'the order has neither StudyInstanceUID nor AccessionNumber, and the patient/date fallback is off' };
  }

  /**
   * The study's patient as the index read it (its first instance), or, for a series, as that series' first file
   * carries it (the study's when the file has no patient attribute at all).
   */
  async patient(studyInstanceUid: string, seriesInstanceUid?: string): Promise<StudyPatient | null> {
    await this.index.scan();
    const study = this.index.findStudies({ studyInstanceUid })[0];
    if (!study) return null;
    if (seriesInstanceUid) {
      const files = this.index.seriesFiles(studyInstanceUid, seriesInstanceUid);
      if (files.length === 0) return null;
      const p = patientFromHeader(await this.header(files));
      if (Object.keys(p).length > 0) return studyPatient(p, 'series');
    }
    return studyPatient(study.patient, 'study');
  }

  async seriesCandidates(studyInstanceUid: string): Promise<SeriesCandidate[]> {
    await this.index.scan();
    const study = this.index.findStudies({ studyInstanceUid })[0];
    if (!study) return [];
    const out: SeriesCandidate[] = [];
    for (const s of study.series) {
      const d = this.index.seriesDetail(studyInstanceUid, s.seriesInstanceUid);
      if (!d) continue;
      const c: SeriesCandidate = {
        seriesInstanceUid: d.seriesInstanceUid,
        seriesNumber: d.seriesNumber,
        modality: d.modality,
        description: d.seriesDescription,
        imageType: d.imageType,
        sliceThickness: d.sliceThickness,
        orientation: d.orientation,
        numberOfInstances: d.instances,
        kernel: d.kernel,
      };
      // As the DICOMweb source in its default mode: the spacing is measured when the attributes lack something.
      const lacking = d.imageType.length === 0 || !d.orientation || d.sliceThickness === undefined;
      if (lacking && d.orientation) {
        c.sliceSpacing = medianSpacing(
          d.positions.map((p) => ({ [TAG.ImagePositionPatient]: { vr: 'DS', Value: p } })),
          d.orientation,
        );
      }
      out.push(c);
    }
    return out.sort(
      (a, b) =>
        (a.seriesNumber ?? Number.POSITIVE_INFINITY) - (b.seriesNumber ?? Number.POSITIVE_INFINITY) ||
        (a.seriesInstanceUid < b.seriesInstanceUid ? -1 : a.seriesInstanceUid > b.seriesInstanceUid ? 1 : 0),
    );
  }

  async instanceUids(studyInstanceUid: string, seriesInstanceUid: string): Promise<string[]> {
    await this.index.scan();
    return this.index.seriesInstanceUids(studyInstanceUid, seriesInstanceUid);
  }

  async loadSeries(studyInstanceUid: string, seriesInstanceUid: string, opts: RetrieveOptions): Promise<RetrievedSeries> {
    await this.index.scan();
    const files = this.index.seriesFiles(studyInstanceUid, seriesInstanceUid);
    if (files.length === 0) throw new StudySourceError(`series ${seriesInstanceUid} is no longer in ${this.holder}'s folder`, true);
    let loaded: Awaited<ReturnType<typeof loadSeriesFiles>>;
    try {
      loaded = await loadSeriesFiles(files, seriesInstanceUid, (line) => this.log?.debug('received.series-note', { note: line }));
    } catch (e) {
      if (e instanceof SeriesInputError) throw new StudySourceError(`received series ${seriesInstanceUid}: ${e.message}`, false);
      const code = (e as NodeJS.ErrnoException).code;
      // A file removed or replaced while it was read: the next attempt reads the folder again.
      if (code === 'ENOENT') throw new StudySourceError(`a file of received series ${seriesInstanceUid} disappeared while it was read`, true);
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

  /** The study attributes as its first readable image file carries them (UIDs byte for byte). */
  async sourceStudy(studyInstanceUid: string): Promise<SourceStudy> {
    const study = this.index.findStudies({ studyInstanceUid })[0];
    for (const s of study?.series ?? []) {
      for (const file of this.index.seriesFiles(studyInstanceUid, s.seriesInstanceUid).slice(0, 3)) {
        const bytes = await readFile(file).catch(() => undefined);
        if (!bytes) continue;
        const r = readInstance(file, bytes);
        if ('instance' in r && r.instance.study.studyInstanceUid === studyInstanceUid) return r.instance.study;
      }
    }
    return { studyInstanceUid };
  }

  /** The data set of the first of `files` that can be read. */
  private async header(files: string[]): Promise<Record<string, unknown>> {
    for (const f of files.slice(0, 3)) {
      try {
        return readHeader(await readFile(f));
      } catch {
        // The next file.
      }
    }
    return {};
  }
}

function found(s: ReceivedStudy, matchedBy: 'studyInstanceUid' | 'accessionNumber'): Lookup {
  return {
    status: 'found',
    studyInstanceUid: s.studyInstanceUid,
    matchedBy,
    instances: s.instances,
    settled: s.stable,
    ...(s.stable ? {} : { unsettled: 'an instance arrived within the receiver stable time, or a file is still being written' }),
  };
}
