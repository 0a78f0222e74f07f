/**
 * One screening job, stage by stage (DESIGN.md "Flow"):
 *
 *   wait-for-study → retrieve → analyze → write-seg → write-fhir → send-oru
 *
 * Each stage is checkpointed in Redis (job-state.ts) before the next begins, so a worker that dies mid-job is
 * replaced by one that resumes at the stage it was in; the result writers are idempotent (deterministic UIDs, ids
 * and control ids), so a stage re-run after a crash overwrites rather than duplicates. retrieve and analyze share
 * the CT volume in memory, so a job resumed at analyze pulls the series again (the analysis itself is the
 * checkpoint the writers read).
 *
 * Failures: a retryable one (PACS/FHIR/EMR down, timeouts) puts the job back in the queue with exponential backoff
 * until the stage's attempts are used up; a permanent one (no usable series, a 4xx, an AR) fails the job at once.
 * A failed job is the dead letter: visible in the API with its stage and reason, and retryable from there.
 * The study wait does not count attempts: the job sleeps in the delayed set between checks until the order's
 * deadline. A cancel from HL7 takes effect at the next stage boundary.
 *
 * Redis itself is not the job's fault: a checkpoint read or write that fails because Redis is unreachable (a
 * restart, a network blip) is retried until Redis answers again (settings.redisOutageMs), and if it stays away
 * the job goes back to the delayed set (or, when even that fails, is left to BullMQ's stalled-job check) without
 * counting an attempt. Progress updates are best effort: one that fails never fails the stage, and one refused
 * because the job is gone from the queue (deleted) stops the job at the next stage boundary.
 */
import { DelayedError, UnrecoverableError } from 'bullmq';
import { CTGATE_VERSION } from '../config/version.js';
import type { DicomWebClient } from '../dicomweb/client.js';
import { str, TAG } from '../dicomweb/dicom-json.js';
import { PacsError } from '../dicomweb/errors.js';
import { sourceStudyFromJson } from '../dicomweb/metadata.js';
import { retrieveVolume } from '../dicomweb/retrieve.js';
import { seriesCandidates } from '../dicomweb/series-candidates.js';
import { type PollEvent, waitForStableStudy } from '../dicomweb/study-finder.js';
import { readStudyPatient } from '../dicomweb/study-patient.js';
import { lossyWarning, TRANSFER_SYNTAXES } from '../imaging/pixel-codecs.js';
import { type SeriesCandidate, type SeriesRules, selectSeries } from '../imaging/series-selection.js';
import { keyImagePng } from '../inference/key-images.js';
import type { ModelRegistry } from '../inference/model-registry.js';
import { runPipeline } from '../inference/pipeline.js';
import type { Logger } from '../observability/log.js';
import { errorPeer, METRICS, type MetricsSink, noMetrics } from '../observability/metrics.js';
import { DEFAULT_PATIENT_IDENTITY_RULE, decideIdentity, describeRule, type PatientIdentityRule } from '../orders/patient-identity.js';
import type { OrderStatus } from '../orders/store.js';
import { analysisOf, type ModelRef, type ResultContext, type ResultLinks, type ReusedFrom } from '../results/context.js';
import { oruControlId } from '../results/oru/encode.js';
import { sourceUidsProblem } from '../results/source-uids.js';
import type { AnalysisCheckpoint } from './analysis-codec.js';
import { type AnalysisReuseStore, reuseKey, seriesFingerprint } from './analysis-reuse.js';
import {
  type ErrorPeer,
  type Fence,
  type JobState,
  type JobStateStore,
  LockLostError,
  newJobState,
  type PatientIdentityRecord,
  STAGES,
  type StageName,
  type StageOutputs,
} from './job-state.js';
import type { ScreeningJobData } from './queue.js';
import { isJobGoneError, isRedisConnectionError } from './redis.js';

/** A stage failure with its retry class. Errors of other types are classified by classifyError. */
export class StageFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'StageFailure';
  }
}

export interface ResultWriters {
  seg?: (ctx: ResultContext) => Promise<NonNullable<StageOutputs['write-seg']>>;
  fhir?: (ctx: ResultContext, seg: StageOutputs['write-seg']) => Promise<NonNullable<StageOutputs['write-fhir']>>;
  oru?: (ctx: ResultContext, fhir: StageOutputs['write-fhir']) => Promise<NonNullable<StageOutputs['send-oru']>>;
}

export interface ScreeningSettings {
  studyWait: {
    /** First wait between PACS polls within one check. */
    pollMs: number;
    /** The instance count must be unchanged this long. */
    stableMs: number;
    /** How long one check polls before the job goes back to sleep in the queue. */
    checkMs: number;
    /** Sleep in the queue between checks. */
    sleepMs: number;
    /** Give up this long after the order was received. */
    deadlineMs: number;
  };
  /** Per stage (wait-for-study excepted), for one attempt. */
  stageTimeoutMs: number;
  /** Attempts per stage before the job fails. */
  stageAttempts: number;
  backoffMs: number;
  backoffMaxMs: number;
  retrieveConcurrency: number;
  keySliceCount: number;
  /**
   * How long a checkpoint read or write keeps retrying while Redis is unreachable before the job is given back to
   * the queue (no attempt counted). Default 30 s.
   */
  redisOutageMs?: number;
  /**
   * A job resumed at send-oru after its worker died between sending the ORU and recording the ACK: 'hold' (default)
   * records deliveryUnknown and does not resend; 'resend' sends it once more with the same MSH-10 (possibleDuplicate).
   */
  oruUnconfirmed?: 'hold' | 'resend';
  /**
   * Longest sleep between looks while another job analyses the same series (the wait grows from 500 ms to this).
   * Default 10 s.
   */
  reuseWaitMaxMs?: number;
}

export interface ScreeningDeps {
  states: JobStateStore;
  /** The order's status as the intake keeps it; markCancelled records that the job stopped for a cancel. */
  orders: { status(jobId: string): Promise<OrderStatus | null>; markCancelled(jobId: string, note: string): Promise<void> };
  pacs: DicomWebClient;
  models: ModelRegistry;
  seriesRules: SeriesRules;
  writers: ResultWriters;
  links: (jobId: string) => ResultLinks;
  settings: ScreeningSettings;
  log: Logger;
  /** Stage durations, model time, outcomes and peer errors (shared through Redis; see observability/metrics.ts). */
  metrics?: MetricsSink;
  /** Shares the analysis of an unchanged series across orders (jobs/analysis-reuse.ts); absent: every order runs the models. */
  reuse?: AnalysisReuseStore;
  /**
   * The patient identity rule for a sender (MSH-4), from the order mappings (Mappings.patientIdentity); absent: the
   * default rule (PatientID, issuer where both sides have one, name and birth date; enforced).
   */
  patientIdentity?: (facility: string) => PatientIdentityRule;
}

/**
 * The study (or the chosen series) is not the order's patient under the sender's rule (orders/patient-identity.ts).
 * Not retried within the job: the job fails at once (the dead letter), naming the fields, never their values, and
 * can be retried from the API once the PACS or the mappings are fixed.
 */
export class PatientIdentityError extends StageFailure {
  constructor(message: string) {
    super(message, false);
    this.name = 'PatientIdentityError';
  }
}

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

/** The slice of a BullMQ job the runner uses (a fake one in unit tests). */
export interface JobHandle {
  id: string;
  data: ScreeningJobData;
  updateProgress(p: object): Promise<void>;
  moveToDelayed(timestamp: number, token?: string): Promise<void>;
  /** The job's BullMQ lock: with the worker's token, it fences the checkpoint writes (job-state.ts Fence). */
  lock?: Omit<Fence, 'token'>;
}

/**
 * Redis was unreachable for longer than settings.redisOutageMs during a checkpoint read or write: the job is given
 * back to the queue without counting an attempt.
 */
export class RedisUnavailableError extends Error {
  constructor(override readonly cause: unknown) {
    super(`Redis is unreachable: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'RedisUnavailableError';
  }
}

/** The job's hash is gone from the queue (deleted by an admin or by hand): nothing is left to run it for. */
export class JobGoneError extends Error {
  constructor(jobId: string, stage: string) {
    super(`job ${jobId} is gone from the queue; stopped before stage ${stage}`);
    this.name = 'JobGoneError';
  }
}

export function classifyError(e: unknown): StageFailure {
  if (e instanceof StageFailure) return e;
  if (e instanceof PacsError) return new StageFailure(e.message, e.retryable);
  const err = e as Error & { retryable?: boolean };
  return new StageFailure(err?.message ?? String(e), err?.retryable ?? true);
}

function withTimeout<T>(p: Promise<T>, ms: number, stage: StageName): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StageFailure(`stage ${stage} timed out after ${ms} ms`, true)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export function backoffMs(attempt: number, s: Pick<ScreeningSettings, 'backoffMs' | 'backoffMaxMs'>): number {
  return Math.min(s.backoffMaxMs, s.backoffMs * 2 ** Math.max(0, attempt - 1));
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
  constructor(private readonly deps: ScreeningDeps) {}

  /** Runs the job from its checkpoint to the end (or to a delay, a cancel or a failure). */
  async run(job: JobHandle, token?: string): Promise<ScreeningResult> {
    let state: JobState | null = null;
    const fence: Fence | undefined = job.lock && token ? { ...job.lock, token } : undefined;
    try {
      return await this.runStages(job, token, fence, (s) => {
        state = s;
      });
    } catch (e) {
      if (e instanceof LockLostError) {
        // Another worker has the job now (or will, once the stalled-job check sees the lapsed lock): stop without
        // touching it; DelayedError tells BullMQ this worker is done with it.
        this.deps.log.warn('job.lock-lost', { jobId: job.id, stage: (state as JobState | null)?.stage });
        throw new DelayedError();
      }
      if (!(e instanceof RedisUnavailableError) && !isRedisConnectionError(e)) throw e;
      // Redis stayed away (or dropped under a command the runner does not retry): give the job back without an
      // attempt. The stage's attempt was taken back in runStages; record that when Redis lets us.
      const s = state as JobState | null;
      this.deps.log.warn('job.redis-unavailable', { jobId: job.id, stage: s?.stage, error: (e as Error).message });
      if (s) await this.deps.states.put(touch(s), fence).catch(() => {});
      const delay = Math.min(this.deps.settings.backoffMs, 5000);
      try {
        await job.moveToDelayed(Date.now() + delay, token);
      } catch (m) {
        // Not even that: the job stays active without a lock renewal (DelayedError tells BullMQ to leave it), and
        // BullMQ's stalled-job check hands it to a worker once its lock expires. Still no attempt counted.
        this.deps.log.warn('job.redis-unavailable-not-delayed', { jobId: job.id, error: (m as Error).message });
      }
      throw new DelayedError();
    }
  }

  /** A Redis call the job depends on, retried while Redis is unreachable; RedisUnavailableError once it stays away. */
  private async redisOp<T>(what: string, jobId: string, fn: () => Promise<T>): Promise<T> {
    const limit = this.deps.settings.redisOutageMs ?? 30_000;
    const started = Date.now();
    let wait = 100;
    for (let tries = 1; ; tries++) {
      try {
        return await fn();
      } catch (e) {
        if (!isRedisConnectionError(e)) throw e;
        if (Date.now() - started + wait > limit) throw new RedisUnavailableError(e);
        if (tries === 1) this.deps.log.warn('job.redis-retry', { jobId, what, error: (e as Error).message });
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 2000);
      }
    }
  }

  private async runStages(job: JobHandle, token: string | undefined, fence: Fence | undefined, seen: (s: JobState) => void): Promise<ScreeningResult> {
    const { states, log } = this.deps;
    const metrics = this.deps.metrics ?? noMetrics;
    const state = (await this.redisOp('read checkpoint', job.id, () => states.get(job.id))) ?? newJobState(job.id);
    seen(state);
    // Progress is best effort, never awaited by a stage and never a stage failure: Redis may be away for a moment,
    // or the job's hash deleted (then the job stops at the next stage boundary).
    let gone = false;
    const progress = (p: object): Promise<void> =>
      job.updateProgress(p).catch((e: unknown) => {
        if (isJobGoneError(e)) gone = true;
        log.debug('job.progress-failed', { jobId: job.id, error: (e as Error)?.message ?? String(e) });
      });
    const put = (s: JobState) => this.redisOp('write checkpoint', job.id, () => states.put(touch(s), fence));
    let analysis: AnalysisCheckpoint | null = null;
    let volume: Awaited<ReturnType<typeof retrieveVolume>> | null = null;
    let seriesMeta: { seriesNumber?: number; seriesDescription?: string } = {};
    // The analysis claim this job holds (jobs/analysis-reuse.ts): dropped when the job fails for good or is cancelled.
    let claimKey = state.outputs.retrieve?.reuse?.claimKey;
    const releaseClaim = async () => {
      if (claimKey && this.deps.reuse) await this.deps.reuse.release(claimKey, job.id).catch(() => {});
    };

    while (state.stage !== 'done' && state.stage !== 'cancelled') {
      const stage: StageName = state.stage;
      if (gone) {
        log.warn('job.gone', { jobId: job.id, stage });
        throw new JobGoneError(job.id, stage);
      }
      if ((await this.redisOp('read order status', job.id, () => this.deps.orders.status(job.id))) === 'cancel-requested') {
        state.stage = 'cancelled';
        state.finishedAt = new Date().toISOString();
        await put(state);
        await this.redisOp('record cancel', job.id, () => this.deps.orders.markCancelled(job.id, `stopped before stage ${stage}`));
        await releaseClaim();
        log.info('job.cancelled', { jobId: job.id, stage });
        metrics.inc(METRICS.jobsCancelled);
        break;
      }
      const index = STAGES.indexOf(stage);
      await progress({ stage, stageIndex: index, stages: STAGES.length, percent: Math.round((index / STAGES.length) * 100) });
      if (gone) {
        log.warn('job.gone', { jobId: job.id, stage });
        throw new JobGoneError(job.id, stage);
      }
      if (stage !== 'wait-for-study') {
        const started = state.attempts[stage] ?? 0;
        if (started >= this.deps.settings.stageAttempts) {
          // Every earlier attempt either failed (then the last failure would have failed the job) or never ended:
          // the worker died in it each time (out of memory, a crash in native code), so the study is the cause.
          const message = `the stage was started ${started} times without finishing (the worker died in it each time)`;
          state.lastError = { stage, peer: 'internal', message, retryable: true, at: new Date().toISOString() };
          await put(state);
          log.error('job.stage-failed', { jobId: job.id, stage, attempts: started, error: message });
          metrics.inc(METRICS.jobsFailed, { stage });
          await releaseClaim();
          throw new UnrecoverableError(`${stage}: ${message}`);
        }
        state.attempts[stage] = started + 1;
      }
      await put(state);
      const t0 = performance.now();
      // A stage that makes later ones unnecessary (a shared analysis) names where the job goes on.
      let skipTo: StageName | undefined;
      try {
        switch (stage) {
          case 'wait-for-study': {
            const out = await this.waitForStudy(job, token, state, put, progress);
            state.outputs['wait-for-study'] = out;
            break;
          }
          case 'retrieve': {
            const chosen = await this.chooseSeries(state);
            // Checked again here, on the series itself: a job retried from this stage did not run wait-for-study, and
            // an analysis is shared only with an order whose patient matches too.
            const warned = state.outputs['wait-for-study']?.patientIdentity?.action === 'warn';
            const identity = await withTimeout(
              this.checkPatient(job, chosen.studyUid, chosen.series.seriesInstanceUid, !warned),
              this.deps.settings.stageTimeoutMs,
              stage,
            );
            const reuse =
              identity.action === 'proceed'
                ? await withTimeout(this.shareOrClaim(job, token, state, chosen, put, progress), this.deps.settings.stageTimeoutMs, stage)
                : null;
            if (reuse && 'shared' in reuse) {
              analysis = reuse.shared;
              if (state.outputs.retrieve) state.outputs.retrieve.patientIdentity = identity;
              skipTo = 'write-fhir';
              break;
            }
            if (reuse) claimKey = reuse.claim.claimKey;
            const r = await withTimeout(
              this.retrieve(job, state, (done, total) => void progress(progressOf(stage, done / total)), chosen),
              this.deps.settings.stageTimeoutMs,
              stage,
            );
            volume = r.volume;
            seriesMeta = r.meta;
            state.outputs.retrieve = { ...r.output, ...(reuse ? { reuse: reuse.claim } : {}), patientIdentity: identity };
            break;
          }
          case 'analyze': {
            if (!volume) {
              // Resumed here after a crash: the volume is not kept anywhere, so pull it again.
              const r = await withTimeout(this.retrieve(job, state), this.deps.settings.stageTimeoutMs, 'retrieve');
              volume = r.volume;
              seriesMeta = r.meta;
            }
            analysis = await withTimeout(this.analyze(job, state, volume, seriesMeta, progress), this.deps.settings.stageTimeoutMs, stage);
            volume = null;
            break;
          }
          case 'write-seg':
          case 'write-fhir':
          case 'send-oru': {
            analysis ??= await this.redisOp('read analysis', job.id, () => states.getAnalysis(job.id));
            if (!analysis) throw new StageFailure('the analysis checkpoint is missing (expired or deleted); re-run the job from the start', false);
            const ctx: ResultContext = { ...analysis, order: job.data.order, ...identityWarningOf(state) };
            await withTimeout(this.write(stage, ctx, state, put), this.deps.settings.stageTimeoutMs, stage);
            if (stage === 'write-seg') await this.redisOp('publish analysis', job.id, () => this.publishAnalysis(job, state, ctx));
            break;
          }
        }
      } catch (e) {
        if (e instanceof DelayedError || e instanceof LockLostError) throw e;
        if (e instanceof RedisUnavailableError || isRedisConnectionError(e)) {
          // Redis, not the stage: take the attempt back; run() gives the job back to the queue.
          if (stage !== 'wait-for-study') state.attempts[stage] = Math.max(0, (state.attempts[stage] ?? 1) - 1);
          throw e instanceof RedisUnavailableError ? e : new RedisUnavailableError(e);
        }
        const f = classifyError(e);
        state.lastError = {
          stage,
          peer: lastErrorPeer(stage, e),
          message: f.message,
          retryable: f.retryable,
          at: new Date().toISOString(),
          ...(e instanceof PatientIdentityError ? { kind: 'patient-identity' as const } : {}),
        };
        await put(state);
        const attempts = state.attempts[stage] ?? 1;
        if (f.retryable && attempts < this.deps.settings.stageAttempts) {
          const delay = backoffMs(attempts, this.deps.settings);
          log.warn('job.stage-retry', { jobId: job.id, stage, attempt: attempts, delayMs: delay, error: f.message });
          metrics.inc(METRICS.stageErrors, { stage, peer: errorPeer(stage, e), retryable: 'true' });
          await job.moveToDelayed(Date.now() + delay, token);
          throw new DelayedError();
        }
        log.error('job.stage-failed', { jobId: job.id, stage, attempts, retryable: f.retryable, error: f.message });
        await releaseClaim();
        metrics.inc(METRICS.stageErrors, { stage, peer: errorPeer(stage, e), retryable: 'false' });
        metrics.inc(METRICS.jobsFailed, { stage });
        throw new UnrecoverableError(`${stage}: ${f.message}`);
      }
      state.timingsMs[stage] = Math.round(performance.now() - t0);
      const next = skipTo ?? STAGES[index + 1];
      state.stage = next ?? 'done';
      state.lastError = undefined;
      if (!next) state.finishedAt = new Date().toISOString();
      const checkpoint = analysis;
      if ((stage === 'analyze' || skipTo) && checkpoint)
        await this.redisOp('write analysis', job.id, () => states.putWithAnalysis(touch(state), checkpoint, fence));
      else await put(state);
      log.info('job.stage-done', { jobId: job.id, stage, ms: state.timingsMs[stage] });
      metrics.observe(METRICS.stageDuration, { stage }, (state.timingsMs[stage] ?? 0) / 1000);
      if (!next) metrics.inc(METRICS.jobsCompleted, { verdict: state.outputs.analyze?.verdict ?? 'none' });
    }
    await progress({ stage: state.stage, stageIndex: STAGES.length, stages: STAGES.length, percent: 100 });
    return summarize(state);
  }

  private async waitForStudy(
    job: JobHandle,
    token: string | undefined,
    state: JobState,
    put: (s: JobState) => Promise<void>,
    progress: (p: object) => Promise<void>,
  ): Promise<NonNullable<StageOutputs['wait-for-study']>> {
    const w = this.deps.settings.studyWait;
    // A PACS that does not answer is shown on the job while it waits (its lastError, peer pacs), not only at the
    // deadline; the first answer after it clears it. Checkpoint writes are chained, in poll order, and awaited below.
    let writes: Promise<void> = Promise.resolve();
    const record = (error: string | undefined) => {
      const prev = state.lastError;
      if (!error && !prev) return;
      const at = new Date().toISOString();
      if (error) {
        const same = prev?.stage === 'wait-for-study' && prev.message === error;
        state.lastError = { stage: 'wait-for-study', peer: 'pacs', message: error, retryable: true, at, since: same ? (prev?.since ?? prev?.at) : at };
        if (!same) this.deps.log.warn('job.study-wait-pacs-error', { jobId: job.id, error });
        void progress({ ...progressOf('wait-for-study', 0, 'waiting: the PACS does not answer'), lastError: { peer: 'pacs', message: error } });
      } else {
        state.lastError = undefined;
        this.deps.log.info('job.study-wait-pacs-back', { jobId: job.id });
        void progress(progressOf('wait-for-study', 0));
      }
      const snapshot = structuredClone(state);
      writes = writes
        .then(() => put(snapshot))
        .catch((e: unknown) => this.deps.log.warn('job.checkpoint-failed', { jobId: job.id, error: (e as Error).message }));
    };
    const onPoll = (e: PollEvent) => {
      if (e.error) {
        if (state.lastError?.message !== e.error || Date.now() - Date.parse(state.lastError.at) > 60_000) record(e.error);
      } else if (state.lastError) record(undefined);
    };
    const order = job.data.order;
    const deadline = Date.parse(job.data.receivedAt) + w.deadlineMs;
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new StageFailure(`the study did not arrive in the PACS within ${Math.round(w.deadlineMs / 60000)} min of the order`, false);
    const r = await waitForStableStudy(
      this.deps.pacs,
      {
        studyInstanceUid: order.studyInstanceUid,
        accessionNumber: order.accessionNumber,
        patientId: order.patient.identifiers[0]?.value,
        orderDate: order.orderDateTime,
      },
      { pollMs: w.pollMs, stableMs: w.stableMs, deadlineMs: Math.min(w.checkMs, remaining), onPoll },
    ).finally(() => writes);
    if (r.status === 'ready') {
      // The accession number (or UID) links the order to the study; whether it is the order's patient is checked here.
      const patientIdentity = await this.checkPatient(job, r.studyInstanceUid);
      return { studyInstanceUid: r.studyInstanceUid, instances: r.instances, matchedBy: r.matchedBy, patientIdentity };
    }
    if (r.status === 'timeout') {
      if (Date.now() + w.sleepMs >= deadline) throw new StageFailure(`the study did not arrive or settle before the deadline: ${r.reason}`, false);
      this.deps.log.info('job.study-not-ready', { jobId: job.id, polls: r.polls, sleepMs: w.sleepMs });
      await job.moveToDelayed(Date.now() + w.sleepMs, token);
      throw new DelayedError();
    }
    throw new StageFailure(r.reason, false);
  }

  /**
   * Compares the order's patient with the study's (or the series') under the sender's rule: returns the record for
   * the checkpoint when the job may go on (a match, mode off, or mode warn), throws PatientIdentityError otherwise.
   * Mismatches are counted (by sender) and logged with field names only.
   */
  private async checkPatient(job: JobHandle, studyUid: string, seriesUid?: string, count = true): Promise<PatientIdentityRecord> {
    const order = job.data.order;
    const sender = order.sender.facility || order.sender.application || 'unknown';
    const rule = this.deps.patientIdentity?.(order.sender.facility) ?? DEFAULT_PATIENT_IDENTITY_RULE;
    const words = describeRule(rule);
    if (rule.mode === 'off') return { outcome: 'not-compared', action: 'proceed', rule: words, compared: [], differ: [], notComparable: [] };
    const patient = await readStudyPatient(this.deps.pacs, studyUid, seriesUid);
    if (!patient) throw new StageFailure(`the PACS no longer lists the ${seriesUid ? 'series' : 'study'} (patient identity check)`, true);
    const d = decideIdentity(order.patient, patient, rule, sender);
    const c = d.comparison;
    const record: PatientIdentityRecord = {
      outcome: c?.outcome ?? 'not-compared',
      action: d.action === 'warn' ? 'warn' : 'proceed',
      rule: words,
      level: patient.level,
      compared: c?.compared ?? [],
      differ: c?.differ ?? [],
      notComparable: c?.notComparable.map((p) => p.field) ?? [],
      ...(d.message && d.action === 'warn' ? { message: d.message } : {}),
    };
    if (d.action === 'proceed') return record;
    const fields = { jobId: job.id, sender, rule: rule.source, level: patient.level, differ: record.differ, notComparable: record.notComparable };
    if (count) this.deps.metrics?.inc(METRICS.patientIdentityMismatches, { sender, action: d.action === 'warn' ? 'warned' : 'failed' });
    if (d.action === 'warn') {
      this.deps.log.warn('job.patient-identity-warning', fields);
      return record;
    }
    this.deps.log.error('job.patient-identity-mismatch', fields);
    throw new PatientIdentityError(d.message ?? 'patient identity mismatch');
  }

  /** The study's series that the selection rules pick, with why. */
  private async chooseSeries(state: JobState): Promise<ChosenSeries> {
    const studyUid = state.outputs['wait-for-study']?.studyInstanceUid;
    if (!studyUid) throw new StageFailure('no study recorded by wait-for-study', false);
    const candidates = await seriesCandidates(this.deps.pacs, studyUid);
    const selection = selectSeries(candidates, this.deps.seriesRules);
    if (!selection.chosen) throw new StageFailure(`no series fits the selection rules: ${selection.reason ?? 'no series'}`, false);
    const chosen = selection.chosen;
    const rank = selection.decisions.find((d) => d.seriesInstanceUid === chosen.seriesInstanceUid)?.reasons.join('; ') ?? '';
    return { studyUid, series: chosen, reason: rank };
  }

  private async retrieve(job: JobHandle, state: JobState, onProgress?: (done: number, total: number) => void, given?: ChosenSeries) {
    const { studyUid, series: chosen, reason } = given ?? (await this.chooseSeries(state));
    const r = await retrieveVolume(this.deps.pacs, studyUid, chosen.seriesInstanceUid, { concurrency: this.deps.settings.retrieveConcurrency, onProgress });
    this.deps.log.debug('job.series-chosen', { jobId: job.id, series: chosen.seriesInstanceUid });
    // Results carry the source's UIDs unchanged (src/results/source-uids.ts); one that cannot be written stops the job.
    const uidProblem = sourceUidsProblem({
      studyInstanceUid: studyUid,
      seriesInstanceUid: chosen.seriesInstanceUid,
      frameOfReferenceUid: r.slices[0]?.frameOfReferenceUid,
      sopInstanceUids: r.slices.map((s) => s.sopInstanceUid),
    });
    if (uidProblem) throw new StageFailure(`series ${chosen.seriesInstanceUid}: ${uidProblem}`, false);
    const lossy = r.decodedSyntaxes.find((ts) => TRANSFER_SYNTAXES.get(ts)?.lossy);
    if (lossy) this.deps.log.warn('job.lossy-source', { jobId: job.id, warning: lossyWarning(lossy, chosen.seriesInstanceUid) });
    return {
      volume: r,
      meta: { seriesNumber: chosen.seriesNumber, seriesDescription: chosen.description },
      output: { seriesInstanceUid: chosen.seriesInstanceUid, slices: r.slices.length, reason },
    };
  }

  /**
   * Before the series is pulled: shares the analysis of an earlier job when the same series content (SOP Instance
   * UIDs) was analysed by the same model versions and its objects are still in the PACS (the job then goes on at
   * write-fhir); otherwise claims the analysis for this job. When another job holds the claim (it is analysing the
   * same series now), this job sleeps in the queue, without counting an attempt, and looks again.
   * null: no reuse (switched off, or the PACS did not list every instance, so the content cannot be told).
   */
  private async shareOrClaim(
    job: JobHandle,
    token: string | undefined,
    state: JobState,
    chosen: ChosenSeries,
    put: (s: JobState) => Promise<void>,
    progress: (p: object) => Promise<void>,
  ): Promise<{ shared: AnalysisCheckpoint } | { claim: { fingerprint: string; claimKey: string } } | null> {
    const reuse = this.deps.reuse;
    if (!reuse) return null;
    const { studyUid, series } = chosen;
    const sops = (await this.deps.pacs.searchInstances(studyUid, series.seriesInstanceUid)).map((i) => str(i, TAG.SOPInstanceUID) ?? '').filter(Boolean);
    if (sops.length === 0 || sops.length < series.numberOfInstances) {
      this.deps.log.info('job.reuse-unknown-content', { jobId: job.id, listed: sops.length, instances: series.numberOfInstances });
      return null;
    }
    const fingerprint = seriesFingerprint(studyUid, series.seriesInstanceUid, sops);
    const key = this.reuseKeyFor(fingerprint, await this.currentModels());
    const source = await this.redisOp('read shared analysis', job.id, () => reuse.source(key));
    if (source && source.jobId !== job.id) {
      const shared = await this.sharedAnalysis(job, state, chosen, source, key);
      if (shared) return { shared };
    }
    const claim = await this.redisOp('claim analysis', job.id, () => reuse.claim(key, job.id, 3 * this.deps.settings.stageTimeoutMs + 60_000));
    if (claim.claimed) {
      state.waitingFor = undefined;
      return { claim: { fingerprint, claimKey: key } };
    }
    // Another job is analysing this very series with these models: wait for it rather than run the models twice.
    const looks = (state.waitingFor?.jobId === claim.holder ? state.waitingFor.looks : 0) + 1;
    state.waitingFor = { jobId: claim.holder, since: state.waitingFor?.since ?? new Date().toISOString(), looks };
    state.attempts.retrieve = Math.max(0, (state.attempts.retrieve ?? 1) - 1);
    await put(state);
    const delay = Math.min(this.deps.settings.reuseWaitMaxMs ?? 10_000, 500 * 2 ** Math.min(looks - 1, 10));
    this.deps.log.info('job.reuse-wait', { jobId: job.id, holder: claim.holder, looks, delayMs: delay });
    void progress({ ...progressOf('retrieve', 0, `waiting for job ${claim.holder}, which is analysing the same series`) });
    await job.moveToDelayed(Date.now() + delay, token);
    throw new DelayedError();
  }

  /** The earlier job's analysis as this job's, or null when it can no longer be shared (then forgotten). */
  private async sharedAnalysis(job: JobHandle, state: JobState, chosen: ChosenSeries, source: ReusedFrom, key: string): Promise<AnalysisCheckpoint | null> {
    const reuse = this.deps.reuse as AnalysisReuseStore;
    const [srcState, srcAnalysis] = await this.redisOp('read shared analysis', job.id, () =>
      Promise.all([this.deps.states.get(source.jobId), this.deps.states.getAnalysis(source.jobId)]),
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
        const found = await this.deps.pacs.searchSeries(chosen.studyUid, { SeriesInstanceUID: uid });
        if (found.length === 0) {
          why = `its series ${uid} is no longer in the PACS`;
          break;
        }
      }
    }
    if (why || !srcAnalysis || !seg || !analyzed) {
      this.deps.log.info('job.reuse-refused', { jobId: job.id, source: source.jobId, why });
      await this.redisOp('forget shared analysis', job.id, () => reuse.forget(key, source.jobId));
      return null;
    }
    state.outputs.retrieve = {
      seriesInstanceUid: chosen.series.seriesInstanceUid,
      slices: srcAnalysis.series.slices.length,
      reason: chosen.reason,
      reusedFrom: source,
    };
    state.outputs.analyze = { ...analyzed, reusedFrom: source };
    state.outputs['write-seg'] = { ...seg, reusedFrom: source };
    this.deps.log.info('job.analysis-shared', { jobId: job.id, source: source.jobId });
    this.deps.metrics?.inc(METRICS.analysesShared);
    return { ...srcAnalysis, jobId: job.id, links: this.deps.links(job.id), reusedFrom: source };
  }

  /** Once write-seg has stored the objects: later orders of the same series and models may share them. */
  private async publishAnalysis(job: JobHandle, state: JobState, ctx: ResultContext): Promise<void> {
    const reuse = this.deps.reuse;
    const r = state.outputs.retrieve?.reuse;
    if (!reuse || !r || ctx.reusedFrom) return;
    // Under the models that made it, which may be newer than those the claim was taken with.
    const key = this.reuseKeyFor(r.fingerprint, ctx.analysis.models);
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

  private async currentModels(): Promise<ModelRef[]> {
    const lease = await this.deps.models.lease();
    try {
      const m = lease.set.manifest;
      return [m.lung, m.lesion, m.classifier].map((x) => ({ name: x.name, version: x.version }));
    } finally {
      lease.release();
    }
  }

  private reuseKeyFor(fingerprint: string, models: readonly ModelRef[]): string {
    return reuseKey(fingerprint, models, { ctgateVersion: CTGATE_VERSION, keySliceCount: this.deps.settings.keySliceCount });
  }

  private async analyze(
    job: JobHandle,
    state: JobState,
    retrieved: Awaited<ReturnType<typeof retrieveVolume>>,
    meta: { seriesNumber?: number; seriesDescription?: string },
    progress: (p: object) => Promise<void>,
  ): Promise<AnalysisCheckpoint> {
    const studyUid = state.outputs['wait-for-study']?.studyInstanceUid as string;
    const studies = await this.deps.pacs.searchStudies({ StudyInstanceUID: studyUid });
    const studyJson = studies.find((s) => sourceStudyFromJson(s).studyInstanceUid === studyUid);
    const study = studyJson ? sourceStudyFromJson(studyJson) : { studyInstanceUid: studyUid };
    const lease = await this.deps.models.lease();
    try {
      const { models, manifest } = lease.set;
      const modelStart = performance.now();
      const result = await runPipeline(retrieved.volume, models, {
        keySliceCount: this.deps.settings.keySliceCount,
        onProgress: (p) => void progress(progressOf('analyze', p.total > 0 ? p.done / p.total : 0, p.stage)),
      });
      this.deps.metrics?.observe(METRICS.modelDuration, { provider: result.executionProvider }, (performance.now() - modelStart) / 1000);
      const slices = retrieved.slices;
      const first = slices[0];
      state.outputs.analyze = {
        verdict: result.verdict,
        category: result.category,
        probability: result.probability,
        models: result.models,
        executionProvider: result.executionProvider,
        ...(result.reason ? { reason: result.reason } : {}),
      };
      const mask = result.lesionMask;
      return {
        jobId: job.id,
        study,
        series: {
          seriesInstanceUid: first?.seriesInstanceUid ?? '',
          seriesNumber: meta.seriesNumber,
          seriesDescription: meta.seriesDescription,
          frameOfReferenceUid: first?.frameOfReferenceUid ?? '',
          sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
          slices,
          geometry: retrieved.volume.geometry,
        },
        analysis: analysisOf(result, manifest),
        keyImages:
          mask && result.findings
            ? result.findings.keySlices.map((k) => ({
                sliceIndex: k.index,
                sopInstanceUid: slices[k.index]?.sopInstanceUid ?? '',
                lesionAreaMm2: k.lesionAreaMm2,
                png: keyImagePng(retrieved.volume, k.index, mask),
              }))
            : [],
        links: this.deps.links(job.id),
      };
    } finally {
      lease.release();
    }
  }

  /**
   * Sends the ORU at most once across worker crashes: "sending" (with its MSH-10) is checkpointed before the first
   * byte goes out and cleared by the send's outcome in this process (ACK, NAK, error: the stage's retries then
   * resend with the same MSH-10, as before). A job that resumes at send-oru and finds "sending" without an outcome
   * died in between, so the EMR may have the message: with oruUnconfirmed 'hold' (the default) the stage ends
   * without a resend, recorded as deliveryUnknown (on the job's API record and page) for a person to check in the
   * EMR; with 'resend' it is sent once more with the same MSH-10 and flagged possibleDuplicate.
   */
  private async sendOruOnce(ctx: ResultContext, state: JobState, put: (s: JobState) => Promise<void>, send: NonNullable<ResultWriters['oru']>): Promise<void> {
    const pending = state.oruSending;
    if (pending && this.deps.settings.oruUnconfirmed !== 'resend') {
      state.outputs['send-oru'] = {
        controlId: pending.controlId,
        ackCode: 'unknown',
        attempts: 0,
        deliveryUnknown: `a worker stopped after starting to send ORU ${pending.controlId} at ${pending.at} and before recording the EMR's answer; not resent (CTGATE_ORU_UNCONFIRMED=hold): check the EMR for MSH-10 ${pending.controlId}`,
      };
      state.oruSending = undefined;
      this.deps.log.warn('job.oru-delivery-unknown', { jobId: ctx.jobId, controlId: pending.controlId, since: pending.at });
      return;
    }
    state.oruSending = { controlId: oruControlId(ctx.jobId), at: new Date().toISOString() };
    await put(state);
    let out: NonNullable<StageOutputs['send-oru']>;
    try {
      out = await send(ctx, state.outputs['write-fhir']);
    } catch (e) {
      // The outcome is known here (a NAK, refused, no ACK in time): the stage's own retry decides, same MSH-10.
      state.oruSending = undefined;
      const unacked = (e as { unacked?: unknown }).unacked;
      if (typeof unacked === 'number' && unacked > 0) state.oruUnacked = (state.oruUnacked ?? 0) + unacked;
      throw e;
    }
    testCrashPoint('oru-ack');
    const unacked = (state.oruUnacked ?? 0) + ('unacked' in out ? (out.unacked ?? 0) : 0);
    state.outputs['send-oru'] = 'controlId' in out && (pending || unacked > 0) ? { ...out, ...(unacked ? { unacked } : {}), possibleDuplicate: true } : out;
    if (pending) this.deps.log.warn('job.oru-resent-unconfirmed', { jobId: ctx.jobId, controlId: pending.controlId });
    state.oruSending = undefined;
  }

  private async write(stage: 'write-seg' | 'write-fhir' | 'send-oru', ctx: ResultContext, state: JobState, put: (s: JobState) => Promise<void>): Promise<void> {
    const w = this.deps.writers;
    switch (stage) {
      case 'write-seg':
        state.outputs['write-seg'] = w.seg ? await w.seg(ctx) : { skipped: 'no PACS writer configured' };
        return;
      case 'write-fhir':
        state.outputs['write-fhir'] = w.fhir ? await w.fhir(ctx, state.outputs['write-seg']) : { skipped: 'CTGATE_FHIR_BASE_URL is not set' };
        return;
      case 'send-oru':
        if (!w.oru) {
          state.outputs['send-oru'] = { skipped: 'CTGATE_ORU_HOST is not set' };
          return;
        }
        await this.sendOruOnce(ctx, state, put, w.oru);
        return;
    }
  }
}

interface ChosenSeries {
  studyUid: string;
  series: SeriesCandidate;
  reason: string;
}

/** The peer a stage's error belongs to, as the job's lastError names it (metrics say 'emr' for the ORU receiver). */
function lastErrorPeer(stage: StageName, e: unknown): ErrorPeer {
  const p = errorPeer(stage, e);
  return p === 'emr' ? 'emr-oru' : p === 'pacs' || p === 'pacs-dimse' || p === 'fhir' || p === 'model' ? p : 'internal';
}

/**
 * Test-only (never set in production): CTGATE_TEST_CRASH_AFTER=oru-ack SIGKILLs the worker right after the EMR's
 * ACK, before the send-oru checkpoint, to test the reconcile in sendOruOnce.
 */
function testCrashPoint(point: 'oru-ack'): void {
  if (process.env.CTGATE_TEST_CRASH_AFTER === point) process.kill(process.pid, 'SIGKILL');
}

function touch(s: JobState): JobState {
  s.updatedAt = new Date().toISOString();
  return s;
}

function progressOf(stage: StageName, fraction: number, detail?: string) {
  const index = STAGES.indexOf(stage);
  return {
    stage,
    stageIndex: index,
    stages: STAGES.length,
    percent: Math.round(((index + Math.min(1, Math.max(0, fraction))) / STAGES.length) * 100),
    ...(detail ? { detail } : {}),
  };
}

/** The identity mismatch a `warn` rule let through (wait-for-study or retrieve), for every result to state. */
function identityWarningOf(state: JobState): Pick<ResultContext, 'patientIdentityWarning'> {
  const warned = [state.outputs.retrieve?.patientIdentity, state.outputs['wait-for-study']?.patientIdentity].find((r) => r?.action === 'warn');
  return warned ? { patientIdentityWarning: { differ: warned.differ, notComparable: warned.notComparable } } : {};
}
