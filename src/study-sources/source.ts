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
import type { MatchedBy, PollEvent, StudyQuery, WaitOptions, WaitResult } from '../dicomweb/study-finder.js';
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

/** What one look at a source says about the order's study. */
export type Lookup =
  | {
      status: 'found';
      studyInstanceUid: string;
      matchedBy: MatchedBy;
      instances: number;
      /** The source's own view of completeness (e.g. no file still being written); true when it has none. */
      settled: boolean;
      /** Why it is not settled, for the timeout reason. */
      unsettled?: string;
    }
  | { status: 'not-found'; reason: string }
  | { status: 'ambiguous'; reason: string }
  | { status: 'unusable'; reason: string };

export interface PollingLookup {
  look(q: StudyQuery): Promise<Lookup>;
  /** The message of a problem to poll through (the next look may not have it); undefined: let it propagate. */
  transient(e: unknown): string | undefined;
}

const defaultSleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/**
 * The wait of waitForStableStudy (src/dicomweb/study-finder.ts) over any lookup, with the same rules and timing:
 * the study must exist, hold at least one instance, keep the same count for `stableMs` and be settled by the
 * source's own account; the wait between looks grows from pollMs to maxPollMs while nothing changes.
 */
export async function pollUntilStable(lookup: PollingLookup, q: StudyQuery, opts: WaitOptions): Promise<WaitResult> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? ((ms: number) => defaultSleep(ms, opts.signal));
  const maxPoll = Math.max(opts.pollMs, opts.maxPollMs ?? opts.pollMs * 8);
  const factor = Math.max(1, opts.backoff ?? 2);
  const start = now();
  const deadline = start + opts.deadlineMs;
  let interval = opts.pollMs;
  let polls = 0;
  let last: { uid: string; count: number; since: number } | undefined;
  let lastProblem = '';
  for (;;) {
    polls++;
    const t = now();
    let event: PollEvent;
    try {
      const found = await lookup.look(q);
      if (found.status === 'ambiguous' || found.status === 'unusable') {
        opts.onPoll?.({ poll: polls, elapsedMs: now() - start, status: found.status });
        return { status: found.status, reason: found.reason, polls, waitedMs: now() - start };
      }
      if (found.status === 'not-found') {
        lastProblem = found.reason;
        last = undefined;
        event = { poll: polls, elapsedMs: t - start, status: found.status };
      } else {
        const count = found.instances;
        if (!last || last.uid !== found.studyInstanceUid || last.count !== count) {
          last = { uid: found.studyInstanceUid, count, since: t };
          interval = opts.pollMs;
        }
        const stableFor = t - last.since;
        event = { poll: polls, elapsedMs: t - start, status: 'found', studyInstanceUid: last.uid, instances: count, stableForMs: stableFor };
        if (count > 0 && stableFor >= opts.stableMs && found.settled) {
          opts.onPoll?.(event);
          return { status: 'ready', studyInstanceUid: last.uid, instances: count, matchedBy: found.matchedBy, polls, waitedMs: now() - start };
        }
        lastProblem = !found.settled
          ? `the study was still arriving (${count} instances; ${found.unsettled ?? 'not settled'})`
          : `the study was still changing (${count} instances, unchanged for ${stableFor} ms of the ${opts.stableMs} ms required)`;
      }
    } catch (e) {
      const message = lookup.transient(e);
      if (message === undefined) throw e;
      lastProblem = `the source did not answer: ${message}`;
      event = { poll: polls, elapsedMs: t - start, status: 'not-found', error: message };
    }
    const after = now();
    const remaining = deadline - after;
    if (remaining <= 0) {
      opts.onPoll?.(event);
      return { status: 'timeout', reason: `gave up after ${after - start} ms and ${polls} poll(s): ${lastProblem}`, polls, waitedMs: after - start };
    }
    let wait = interval;
    if (last) wait = Math.min(wait, Math.max(1, last.since + opts.stableMs - after));
    wait = Math.max(1, Math.min(wait, remaining));
    event.nextPollMs = wait;
    opts.onPoll?.(event);
    await sleep(wait);
    interval = Math.min(maxPoll, interval * factor);
  }
}
