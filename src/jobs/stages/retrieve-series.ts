/**
 * retrieve: picks the study's series by the selection rules, checks its patient against the order's, and pulls it
 * into a CT volume — unless an earlier order's analysis of the same series content can be shared
 * (analysis-sharing.ts), in which case the job skips to write-fhir with that analysis.
 *
 * Reads: wait-for-study's study. Gives: the series volume (to analyze), or the shared analysis. Its three network
 * steps (patient check, share or claim, pull) each get the stage timeout.
 */
import type { JobState } from '../job-state.js';
import type { ScreeningDeps } from '../screening-deps.js';
import type { JobHandle, Operator, SeriesVolume, StageContext, StageDone } from '../stage-operator.js';
import { releaseClaim, shareOrClaim } from './analysis-sharing.js';
import { checkPatient } from './patient-check.js';
import { chooseSeries, pullSeries } from './series-choice.js';

export class RetrieveSeries implements Operator<'retrieve', never, 'series' | 'analysis'> {
  readonly name = 'retrieve';
  readonly takes = [] as const;
  readonly gives = ['series', 'analysis'] as const;
  readonly reads = ['wait-for-study'] as const;
  readonly timeout = 'steps';

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext): Promise<StageDone<'retrieve', 'series' | 'analysis'>> {
    const { job, state } = ctx;
    const chosen = await chooseSeries(this.deps, state);
    // Checked again here, on the series itself: a job retried from this stage did not run wait-for-study, and an
    // analysis is shared only with an order whose patient matches too.
    const warned = state.outputs['wait-for-study']?.patientIdentity?.action === 'warn';
    const patientIdentity = await ctx.timed(checkPatient(this.deps, job, chosen.studyUid, chosen.series.seriesInstanceUid, !warned));
    const reuse = patientIdentity.action === 'proceed' ? await ctx.timed(shareOrClaim(this.deps, ctx, chosen)) : null;
    if (reuse && 'shared' in reuse) {
      return { output: { ...reuse.shared.output, patientIdentity }, gives: { analysis: reuse.shared.analysis }, skipTo: 'write-fhir' };
    }
    if (reuse) ctx.onGiveUp(() => releaseClaim(this.deps, job.id, reuse.claim.claimKey));
    const pulled = await ctx.timed(pullSeries(this.deps, job, chosen, (done, total) => ctx.progress(done / total)));
    return { output: { ...pulled.output, ...(reuse ? { reuse: reuse.claim } : {}), patientIdentity }, gives: { series: pulled.series } };
  }

  /** After a resume at analyze: the volume is not kept anywhere, so the series is chosen and pulled again. */
  async recover(_key: 'series' | 'analysis', ctx: StageContext): Promise<SeriesVolume> {
    const chosen = await chooseSeries(this.deps, ctx.state);
    return (await pullSeries(this.deps, ctx.job, chosen)).series;
  }

  /** The analysis claim a finished retrieve took, should the job stop for good before publishing it. */
  async release(job: JobHandle, state: JobState): Promise<void> {
    await releaseClaim(this.deps, job.id, state.outputs.retrieve?.reuse?.claimKey);
  }
}
