import type { DicomWebClient } from './client.js';
import { type DicomJson, num, str, strs, TAG } from './dicom-json.js';
import { PacsError } from './errors.js';

/** The DICOMweb calls study finding needs (a DicomWebClient, or a wrapper that counts or fakes them). */
export type StudySource = Pick<DicomWebClient, 'searchStudies' | 'searchSeries'>;

/** What an order says about its study (Order: studyInstanceUid, accessionNumber, patient.identifiers[0].value, orderDateTime). */
export interface StudyQuery {
  studyInstanceUid?: string;
  accessionNumber?: string;
  patientId?: string;
  /** The order's date: ISO 8601 (its date part is used as written, i.e. local to the sender) or DICOM YYYYMMDD. */
  orderDate?: string;
}

export interface FindOptions {
  /**
   * Look the study up by PatientID and StudyDate (order date − daysBefore … order date + daysAfter) when the order
   * has neither StudyInstanceUID nor AccessionNumber (default window: ± 1 day). It must match exactly one study with a modality in
   * `modalities`; several are "ambiguous". Off unless given.
   */
  patientDateFallback?: { daysBefore?: number; daysAfter?: number; modalities?: string[] };
}

export type MatchedBy = 'studyInstanceUid' | 'accessionNumber' | 'patientAndDate';

export type FindResult =
  | { status: 'found'; studyInstanceUid: string; matchedBy: MatchedBy; study: DicomJson }
  | { status: 'not-found'; reason: string }
  | { status: 'ambiguous'; reason: string; studyInstanceUids: string[] }
  /** The query cannot identify a study (no UID, no accession, fallback off or without patient and date). */
  | { status: 'unusable'; reason: string };

/**
 * One field only: dicomweb-client percent-encodes the commas of a list, which Orthanc 1.10 / plugin 1.7 then ignores.
 * StudyDate, AccessionNumber and ModalitiesInStudy are default study attributes of QIDO-RS anyway.
 */
const STUDY_FIELDS = TAG.NumberOfStudyRelatedInstances;

/** YYYYMMDD of an ISO 8601 or DICOM date, shifted by `days`; undefined when it is not a date. */
export function dicomDate(value: string, days = 0): string | undefined {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})/.exec(value.trim());
  if (!m) return undefined;
  const t = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  const check = new Date(t);
  if (check.getUTCFullYear() !== Number(m[1]) || check.getUTCMonth() !== Number(m[2]) - 1 || check.getUTCDate() !== Number(m[3])) return undefined;
  const d = new Date(t + days * 86_400_000);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
}

const unique = (xs: string[]) => [...new Set(xs)];

/**
 * Finds the order's study: by StudyInstanceUID when the order carries one, else by AccessionNumber (exact match,
 * one study only), else — only when configured — by PatientID and a StudyDate window. Reasons name the kind of
 * identifier, never its value (they end up in job histories and logs). PacsErrors propagate.
 */
export async function findStudy(source: StudySource, q: StudyQuery, opts: FindOptions = {}): Promise<FindResult> {
  const uid = q.studyInstanceUid?.trim();
  if (uid) {
    const hits = (await source.searchStudies({ StudyInstanceUID: uid, includefield: STUDY_FIELDS })).filter((s) => str(s, TAG.StudyInstanceUID) === uid);
    const hit = hits[0];
    if (!hit) return { status: 'not-found', reason: "no study with the order's StudyInstanceUID is in the PACS" };
    return { status: 'found', studyInstanceUid: uid, matchedBy: 'studyInstanceUid', study: hit };
  }
  const acc = q.accessionNumber?.trim();
  if (acc) {
    // Exact match on our side too: QIDO treats * and ? as wildcards and some PACS match case-insensitively.
    const hits = (await source.searchStudies({ AccessionNumber: acc, includefield: STUDY_FIELDS })).filter((s) => str(s, TAG.AccessionNumber)?.trim() === acc);
    const uids = unique(hits.map((s) => str(s, TAG.StudyInstanceUID) ?? '').filter(Boolean));
    if (uids.length === 0) return { status: 'not-found', reason: "no study with the order's AccessionNumber is in the PACS" };
    if (uids.length > 1) {
      return { status: 'ambiguous', reason: `${uids.length} studies carry the order's AccessionNumber: ${uids.join(', ')}`, studyInstanceUids: uids };
    }
    return { status: 'found', studyInstanceUid: uids[0] as string, matchedBy: 'accessionNumber', study: hits[0] as DicomJson };
  }
  const fb = opts.patientDateFallback;
  if (!fb) return { status: 'unusable', reason: 'the order has neither StudyInstanceUID nor AccessionNumber, and the patient/date fallback is off' };
  const pid = q.patientId?.trim();
  const from = q.orderDate ? dicomDate(q.orderDate, -(fb.daysBefore ?? 1)) : undefined;
  const to = q.orderDate ? dicomDate(q.orderDate, fb.daysAfter ?? 1) : undefined;
  if (!pid || !from || !to) {
    return {
      status: 'unusable',
      reason: 'the order has neither StudyInstanceUID nor AccessionNumber, and lacks a patient ID or a valid order date for the fallback',
    };
  }
  const modalities = (fb.modalities ?? ['CT']).map((m) => m.toUpperCase());
  const hits = (await source.searchStudies({ PatientID: pid, StudyDate: `${from}-${to}`, includefield: STUDY_FIELDS })).filter((s) => {
    if (str(s, TAG.PatientID)?.trim() !== pid) return false;
    const date = str(s, TAG.StudyDate) ?? '';
    if (date < from || date > to) return false;
    const mods = strs(s, '00080061').map((m) => m.toUpperCase());
    return mods.length === 0 || mods.some((m) => modalities.includes(m));
  });
  const uids = unique(hits.map((s) => str(s, TAG.StudyInstanceUID) ?? '').filter(Boolean));
  const window = `StudyDate ${from}–${to}`;
  if (uids.length === 0) return { status: 'not-found', reason: `no ${modalities.join('/')} study of the order's patient with ${window} is in the PACS` };
  if (uids.length > 1) {
    const list = uids.map((u) => {
      const s = hits.find((h) => str(h, TAG.StudyInstanceUID) === u) as DicomJson;
      return `${u} (${str(s, TAG.StudyDate) ?? 'no date'})`;
    });
    return {
      status: 'ambiguous',
      reason: `ambiguous: ${uids.length} ${modalities.join('/')} studies of the order's patient have ${window} (${list.join(', ')}); the order needs an AccessionNumber or StudyInstanceUID`,
      studyInstanceUids: uids,
    };
  }
  return { status: 'found', studyInstanceUid: uids[0] as string, matchedBy: 'patientAndDate', study: hits[0] as DicomJson };
}

/** Instances in the study: NumberOfStudyRelatedInstances when the PACS gave it, else the sum over its series. */
export async function studyInstanceCount(source: StudySource, studyInstanceUid: string, study?: DicomJson): Promise<number> {
  const n = study ? num(study, TAG.NumberOfStudyRelatedInstances) : undefined;
  if (n !== undefined) return n;
  const series = await source.searchSeries(studyInstanceUid, { includefield: TAG.NumberOfSeriesRelatedInstances });
  return series.reduce((s, ds) => s + (num(ds, TAG.NumberOfSeriesRelatedInstances) ?? 0), 0);
}

export interface WaitOptions extends FindOptions {
  /** First wait between polls. */
  pollMs: number;
  /** Longest wait between polls; the wait grows by `backoff` each poll that sees no change. Default pollMs × 8. */
  maxPollMs?: number;
  /** Growth factor of the wait between unchanged polls. Default 2. */
  backoff?: number;
  /** The instance count must stay the same this long before the study counts as complete. */
  stableMs: number;
  /** Give up this long after the call started. */
  deadlineMs: number;
  /** Clock and sleep, injectable for tests. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Aborts the default sleep (the wait then rejects with the signal's reason), e.g. when the job is cancelled. */
  signal?: AbortSignal;
  onPoll?: (e: PollEvent) => void;
}

export interface PollEvent {
  poll: number;
  elapsedMs: number;
  status: FindResult['status'];
  studyInstanceUid?: string;
  instances?: number;
  /** How long the count has been unchanged. */
  stableForMs?: number;
  /** The wait before the next poll (absent on the last). */
  nextPollMs?: number;
  /** Why this poll got no answer (a retryable PacsError: PACS down, 5xx, timeout), e.g. "QIDO studies: PACS unreachable: …". */
  error?: string;
}

export type WaitResult =
  | { status: 'ready'; studyInstanceUid: string; instances: number; matchedBy: MatchedBy; polls: number; waitedMs: number }
  /** unusable: the query cannot identify a study (returned at once, waiting cannot help). */
  | { status: 'timeout' | 'ambiguous' | 'unusable'; reason: string; polls: number; waitedMs: number };

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
  /** Who answers, for the timeout reason: "the PACS", "ctgate's C-STORE receiver". */
  holder: string;
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
 * Polls any lookup (the PACS's QIDO here; ctgate's receive folder or C-FIND in src/study-sources) until the study
 * exists, holds at least one instance, keeps the same count for `stableMs` and is settled by the source's own
 * account; the wait between looks grows from pollMs to maxPollMs while nothing changes (and back to pollMs when the
 * count moves). 'timeout' at the deadline, 'ambiguous' / 'unusable' at once, each with a reason. Problems the lookup
 * calls transient are polled through until the deadline; the others propagate.
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
      lastProblem = `${lookup.holder} did not answer: ${message}`;
      event = { poll: polls, elapsedMs: t - start, status: 'not-found', error: message };
    }
    const after = now();
    const remaining = deadline - after;
    if (remaining <= 0) {
      opts.onPoll?.(event);
      return { status: 'timeout', reason: `gave up after ${after - start} ms and ${polls} poll(s): ${lastProblem}`, polls, waitedMs: after - start };
    }
    // Wake when stability would be reached if nothing changes, and never sleep past the deadline (one last poll there).
    let wait = interval;
    if (last) wait = Math.min(wait, Math.max(1, last.since + opts.stableMs - after));
    wait = Math.max(1, Math.min(wait, remaining));
    event.nextPollMs = wait;
    opts.onPoll?.(event);
    await sleep(wait);
    interval = Math.min(maxPoll, interval * factor);
  }
}

/**
 * Polls the PACS until the study exists and its instance count has not changed for `stableMs` (pollUntilStable's
 * rules). Retryable PacsErrors (PACS down, 5xx, timeouts; the client has already retried them) are polled through
 * until the deadline; the others (4xx: auth, bad URL) propagate.
 */
export function waitForStableStudy(source: StudySource, q: StudyQuery, opts: WaitOptions): Promise<WaitResult> {
  const look = async (query: StudyQuery): Promise<Lookup> => {
    const found = await findStudy(source, query, opts);
    if (found.status !== 'found') return found;
    const instances = await studyInstanceCount(source, found.studyInstanceUid, found.study);
    return { status: 'found', studyInstanceUid: found.studyInstanceUid, matchedBy: found.matchedBy, instances, settled: true };
  };
  return pollUntilStable({ holder: 'the PACS', look, transient: (e) => (e instanceof PacsError && e.retryable ? e.message : undefined) }, q, opts);
}
