/**
 * The study's series the selection rules pick, and pulling it into a volume (retrieve, and its recover after a
 * resume), from the job's study source (src/study-sources: WADO-RS, or the files received by C-STORE).
 */

import { sourceUidsProblem } from '../../dicom/source-uids.js';
import { lossyWarning, TRANSFER_SYNTAXES } from '../../imaging/pixel-codecs.js';
import { type SeriesCandidate, selectSeries } from '../../imaging/series-selection.js';
import type { JobState, StageOutputs } from '../job-state.js';
import type { ScreeningDeps } from '../screening-deps.js';
import { StageFailure } from '../stage-errors.js';
import type { JobHandle, SeriesVolume } from '../stage-operator.js';
import { studySourceOf } from './study-source.js';

export interface ChosenSeries {
  studyUid: string;
  series: SeriesCandidate;
  /** Why the rules ranked it first. */
  reason: string;
}

/** The study's series that the selection rules pick, with why. */
export async function chooseSeries(deps: ScreeningDeps, state: JobState): Promise<ChosenSeries> {
  const studyUid = state.outputs['wait-for-study']?.studyInstanceUid;
  if (!studyUid) throw new StageFailure('no study recorded by wait-for-study', false);
  const candidates = await studySourceOf(deps).seriesCandidates(studyUid);
  const selection = selectSeries(candidates, deps.seriesRules);
  if (!selection.chosen) throw new StageFailure(`no series fits the selection rules: ${selection.reason ?? 'no series'}`, false);
  const chosen = selection.chosen;
  const rank = selection.decisions.find((d) => d.seriesInstanceUid === chosen.seriesInstanceUid)?.reasons.join('; ') ?? '';
  return { studyUid, series: chosen, reason: rank };
}

/** Pulls the chosen series; its UIDs must be ones the results can carry unchanged (src/dicom/source-uids.ts). */
export async function pullSeries(
  deps: ScreeningDeps,
  job: JobHandle,
  chosen: ChosenSeries,
  onProgress?: (done: number, total: number) => void,
): Promise<{ series: SeriesVolume; output: NonNullable<StageOutputs['retrieve']> }> {
  const { studyUid, series, reason } = chosen;
  const r = await studySourceOf(deps).loadSeries(studyUid, series.seriesInstanceUid, { concurrency: deps.settings.retrieveConcurrency, onProgress });
  deps.log.debug('job.series-chosen', { jobId: job.id, series: series.seriesInstanceUid });
  const uidProblem = sourceUidsProblem({
    studyInstanceUid: studyUid,
    seriesInstanceUid: series.seriesInstanceUid,
    frameOfReferenceUid: r.slices[0]?.frameOfReferenceUid,
    sopInstanceUids: r.slices.map((s) => s.sopInstanceUid),
  });
  if (uidProblem) throw new StageFailure(`series ${series.seriesInstanceUid}: ${uidProblem}`, false);
  const lossy = r.decodedSyntaxes.find((ts) => TRANSFER_SYNTAXES.get(ts)?.lossy);
  if (lossy) deps.log.warn('job.lossy-source', { jobId: job.id, warning: lossyWarning(lossy, series.seriesInstanceUid) });
  return {
    series: { retrieved: r, seriesNumber: series.seriesNumber, seriesDescription: series.description },
    output: { seriesInstanceUid: series.seriesInstanceUid, slices: r.slices.length, reason },
  };
}
