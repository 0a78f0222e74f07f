/**
 * One screening job, stage by stage (DESIGN.md "Flow"):
 *
 *   wait-for-study → retrieve → analyze → write-seg → write-fhir → send-oru
 *
 * The stages are operators (stages/*, one file each, declaring what they take and give); the stage runner
 * (stage-runner.ts) runs them from the job's checkpoint and owns checkpoints, attempts, timeouts, cancel, lock
 * fencing, Redis outages, progress and the hand-over of values between stages. The result writers are idempotent
 * (deterministic UIDs, ids and control ids), so a stage re-run after a crash overwrites rather than duplicates.
 *
 * A failed job is the dead letter: visible in the API with its stage and reason, and retryable from there.
 */
import type { ReusedFrom } from '../results/context.js';
import type { JobState, StageName } from './job-state.js';
import type { ScreeningDeps } from './screening-deps.js';
import type { JobHandle } from './stage-operator.js';
import { StageRunner } from './stage-runner.js';
import { screeningStages } from './stages/pipeline.js';

export type { ResultWriters, ScreeningDeps, ScreeningSettings } from './screening-deps.js';
export { backoffMs, classifyError, JobGoneError, PatientIdentityError, RedisUnavailableError, StageFailure } from './stage-errors.js';
export type { JobHandle } from './stage-operator.js';

/** What the job returns (BullMQ's returnvalue), also shown by the API and the page. */
export interface ScreeningResult {
  jobId: string;
  status: 'completed' | 'cancelled';
  verdict?: string;
  probability?: number | null;
  models?: string[];
  studyInstanceUid?: string;
  segSeriesInstanceUid?: string;
  keyImageSeriesInstanceUid?: string;
  srSeriesInstanceUid?: string;
  diagnosticReportId?: string;
  oruAckCode?: string;
  /** The earlier order whose analysis and PACS objects this one shares (the models did not run for it). */
  sharedFrom?: ReusedFrom;
  skipped: Partial<Record<StageName, string>>;
  timingsMs: JobState['timingsMs'];
}

export function summarize(state: JobState): ScreeningResult {
  const o = state.outputs;
  const skipped: ScreeningResult['skipped'] = {};
  for (const s of ['write-seg', 'write-fhir', 'send-oru'] as const) {
    const out = o[s] as { skipped?: string } | undefined;
    if (out?.skipped) skipped[s] = out.skipped;
  }
  const seg = o['write-seg'] as { seriesInstanceUid?: string; keyImageSeriesInstanceUid?: string; srSeriesInstanceUid?: string } | undefined;
  const fhir = o['write-fhir'] as { diagnosticReportId?: string } | undefined;
  const oru = o['send-oru'] as { ackCode?: string } | undefined;
  return {
    jobId: state.jobId,
    status: state.stage === 'cancelled' ? 'cancelled' : 'completed',
    verdict: o.analyze?.verdict,
    probability: o.analyze?.probability,
    models: o.analyze?.models,
    studyInstanceUid: o['wait-for-study']?.studyInstanceUid,
    segSeriesInstanceUid: seg?.seriesInstanceUid,
    keyImageSeriesInstanceUid: seg?.keyImageSeriesInstanceUid,
    srSeriesInstanceUid: seg?.srSeriesInstanceUid,
    diagnosticReportId: fhir?.diagnosticReportId,
    oruAckCode: oru?.ackCode,
    ...(o.analyze?.reusedFrom ? { sharedFrom: o.analyze.reusedFrom } : {}),
    skipped,
    timingsMs: state.timingsMs,
  };
}

export class ScreeningRunner {
  private readonly stages: StageRunner;

  constructor(deps: ScreeningDeps) {
    this.stages = new StageRunner(screeningStages(deps), deps);
  }

  /** Runs the job from its checkpoint to the end (or to a delay, a cancel or a failure). */
  async run(job: JobHandle, token?: string): Promise<ScreeningResult> {
    return summarize(await this.stages.run(job, token));
  }
}
