/**
 * Sharing an analysis across orders of the same series (jobs/analysis-reuse.ts), from the stages' side: retrieve
 * shares an earlier job's analysis or claims the series for this job; write-seg publishes it once its objects are
 * stored.
 */
import { CTGATE_VERSION } from '../../config/version.js';
import { METRICS } from '../../observability/metric-names.js';
import type { ModelRef, ResultContext, ReusedFrom } from '../../results/context.js';
import type { AnalysisCheckpoint } from '../analysis-codec.js';
import { type AnalysisReuseStore, reuseKey, seriesFingerprint } from '../analysis-reuse.js';
import type { JobState, StageOutputs } from '../job-state.js';
import type { ScreeningDeps } from '../screening-deps.js';
import type { JobHandle, StageContext } from '../stage-operator.js';
import type { ChosenSeries } from './series-choice.js';
import { studySourceOf } from './study-source.js';

export interface SharedAnalysis {
  analysis: AnalysisCheckpoint;
  /** retrieve's output: the series, and whose analysis this job shares. */
  output: NonNullable<StageOutputs['retrieve']>;
}

export interface AnalysisClaim {
  fingerprint: string;
  claimKey: string;
}

/**
 * Before the series is pulled: shares the analysis of an earlier job when the same series content (SOP Instance
 * UIDs) was analysed by the same model versions and its objects are still in the PACS (the job then goes on at
 * write-fhir); otherwise claims the analysis for this job. When another job holds the claim (it is analysing the
 * same series now), this job sleeps in the queue, without counting an attempt, and looks again.
 * null: no reuse (switched off, or the PACS did not list every instance, so the content cannot be told).
 */
export async function shareOrClaim(
  deps: ScreeningDeps,
  ctx: StageContext<never>,
  chosen: ChosenSeries,
): Promise<{ shared: SharedAnalysis } | { claim: AnalysisClaim } | null> {
  const reuse = deps.reuse;
  if (!reuse) return null;
  const { job, state } = ctx;
  const { studyUid, series } = chosen;
  const sops = await studySourceOf(deps).instanceUids(studyUid, series.seriesInstanceUid);
  if (sops.length === 0 || sops.length < series.numberOfInstances) {
    deps.log.info('job.reuse-unknown-content', { jobId: job.id, listed: sops.length, instances: series.numberOfInstances });
    return null;
  }
  const fingerprint = seriesFingerprint(studyUid, series.seriesInstanceUid, sops);
  const key = reuseKeyFor(deps, fingerprint, await currentModels(deps));
  const source = await ctx.redis('read shared analysis', () => reuse.source(key));
  if (source && source.jobId !== job.id) {
    const shared = await sharedAnalysis(deps, ctx, chosen, source, key);
    if (shared) return { shared };
  }
  const claim = await ctx.redis('claim analysis', () => reuse.claim(key, job.id, 3 * deps.settings.stageTimeoutMs + 60_000));
  if (claim.claimed) {
    state.waitingFor = undefined;
    return { claim: { fingerprint, claimKey: key } };
  }
  // Another job is analysing this very series with these models: wait for it rather than run the models twice.
  const looks = (state.waitingFor?.jobId === claim.holder ? state.waitingFor.looks : 0) + 1;
  state.waitingFor = { jobId: claim.holder, since: state.waitingFor?.since ?? new Date().toISOString(), looks };
  const delay = Math.min(deps.settings.reuseWaitMaxMs ?? 10_000, 500 * 2 ** Math.min(looks - 1, 10));
  deps.log.info('job.reuse-wait', { jobId: job.id, holder: claim.holder, looks, delayMs: delay });
  ctx.progress(0, `waiting for job ${claim.holder}, which is analysing the same series`);
  return ctx.requeue(delay);
}

/**
 * The earlier job's analysis as this job's, or null when it can no longer be shared (then forgotten). Records the
 * earlier job's analyze and write-seg outputs as this job's (those stages are skipped).
 */
async function sharedAnalysis(
  deps: ScreeningDeps,
  ctx: StageContext<never>,
  chosen: ChosenSeries,
  source: ReusedFrom,
  key: string,
): Promise<SharedAnalysis | null> {
  const reuse = deps.reuse as AnalysisReuseStore;
  const { job, state } = ctx;
  const [srcState, srcAnalysis] = await ctx.redis('read shared analysis', () =>
    Promise.all([deps.states.get(source.jobId), deps.states.getAnalysis(source.jobId)]),
  );
  const seg = srcState?.outputs['write-seg'];
  const analyzed = srcState?.outputs.analyze;
  const objects = seg ? ['seriesInstanceUid' in seg ? seg.seriesInstanceUid : undefined, seg.srSeriesInstanceUid].filter((u): u is string => !!u) : [];
  let why: string | undefined;
  if (!srcState || !srcAnalysis || !seg || !analyzed) why = 'its checkpoint is gone (expired or re-run)';
  else if (srcAnalysis.series.seriesInstanceUid !== chosen.series.seriesInstanceUid) why = 'it analysed another series';
  else if (objects.length === 0 && !('skipped' in seg)) why = 'it stored nothing';
  else {
    for (const uid of objects) {
      const found = await deps.pacs.searchSeries(chosen.studyUid, { SeriesInstanceUID: uid });
      if (found.length === 0) {
        why = `its series ${uid} is no longer in the PACS`;
        break;
      }
    }
  }
  if (why || !srcAnalysis || !seg || !analyzed) {
    deps.log.info('job.reuse-refused', { jobId: job.id, source: source.jobId, why });
    await ctx.redis('forget shared analysis', () => reuse.forget(key, source.jobId));
    return null;
  }
  state.outputs.analyze = { ...analyzed, reusedFrom: source };
  state.outputs['write-seg'] = { ...seg, reusedFrom: source };
  deps.log.info('job.analysis-shared', { jobId: job.id, source: source.jobId });
  deps.metrics?.inc(METRICS.analysesShared);
  return {
    analysis: { ...srcAnalysis, jobId: job.id, links: deps.links(job.id), reusedFrom: source },
    output: { seriesInstanceUid: chosen.series.seriesInstanceUid, slices: srcAnalysis.series.slices.length, reason: chosen.reason, reusedFrom: source },
  };
}

/** Once write-seg has stored the objects: later orders of the same series and models may share them. */
export async function publishAnalysis(deps: ScreeningDeps, job: JobHandle, state: JobState, ctx: ResultContext): Promise<void> {
  const reuse = deps.reuse;
  const r = state.outputs.retrieve?.reuse;
  if (!reuse || !r || ctx.reusedFrom) return;
  // Under the models that made it, which may be newer than those the claim was taken with.
  const key = reuseKeyFor(deps, r.fingerprint, ctx.analysis.models);
  const o = job.data.order;
  await reuse.publish(key, {
    jobId: job.id,
    placerOrderNumber: o.placerOrderNumber,
    ...(o.fillerOrderNumber ? { fillerOrderNumber: o.fillerOrderNumber } : {}),
    ...(o.accessionNumber ? { accessionNumber: o.accessionNumber } : {}),
    analyzedAt: ctx.analysis.completedAt,
  });
  if (key !== r.claimKey) await reuse.release(r.claimKey, job.id);
}

/** Drops the job's claim on a series (its analysis failed for good, or the job was cancelled), best effort. */
export async function releaseClaim(deps: ScreeningDeps, jobId: string, claimKey: string | undefined): Promise<void> {
  if (claimKey && deps.reuse) await deps.reuse.release(claimKey, jobId).catch(() => {});
}

async function currentModels(deps: ScreeningDeps): Promise<ModelRef[]> {
  const lease = await deps.models.lease();
  try {
    const m = lease.set.manifest;
    return [m.lung, m.lesion, m.classifier].map((x) => ({ name: x.name, version: x.version }));
  } finally {
    lease.release();
  }
}

function reuseKeyFor(deps: ScreeningDeps, fingerprint: string, models: readonly ModelRef[]): string {
  return reuseKey(fingerprint, models, { ctgateVersion: CTGATE_VERSION, keySliceCount: deps.settings.keySliceCount });
}
