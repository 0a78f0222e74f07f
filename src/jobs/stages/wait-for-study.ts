/**
 * wait-for-study: finds the order's study in the study source — the PACS over DICOMweb, or the studies received by
 * C-STORE (src/study-sources) — by StudyInstanceUID or accession number, and waits until it is stable, then checks
 * the study's patient against the order's.
 *
 * Takes: the job's order and received time. Gives: the study (checkpointed). Counts no attempts and has no stage
 * timeout: one check polls for settings.studyWait.checkMs, then the job sleeps in the queue until the next, up to
 * the order's deadline.
 */
import type { PollEvent } from '../../dicomweb/study-finder.js';
import type { StudySource } from '../../study-sources/source.js';
import type { ScreeningDeps } from '../screening-deps.js';
import { StageFailure } from '../stage-errors.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';
import { checkPatient } from './patient-check.js';
import { studySourceOf } from './study-source.js';

export class WaitForStudy implements Operator<'wait-for-study', never, never> {
  readonly name = 'wait-for-study';
  readonly takes = [] as const;
  readonly gives = [] as const;
  readonly reads = [] as const;
  readonly countsAttempts = false;
  readonly timeout = 'none';

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext): Promise<StageDone<'wait-for-study', never>> {
    const w = this.deps.settings.studyWait;
    const { job } = ctx;
    const order = job.data.order;
    const deadline = Date.parse(job.data.receivedAt) + w.deadlineMs;
    const remaining = deadline - Date.now();
    const source = studySourceOf(this.deps);
    if (remaining <= 0) throw new StageFailure(`the study did not arrive ${source.where} within ${Math.round(w.deadlineMs / 60000)} min of the order`, false);
    const outage = new PacsOutageRecorder(ctx, this.deps, source);
    const r = await source
      .waitForStudy(
        {
          studyInstanceUid: order.studyInstanceUid,
          accessionNumber: order.accessionNumber,
          patientId: order.patient.identifiers[0]?.value,
          orderDate: order.orderDateTime,
        },
        { pollMs: w.pollMs, stableMs: w.stableMs, deadlineMs: Math.min(w.checkMs, remaining), onPoll: (e) => outage.onPoll(e) },
      )
      .finally(() => outage.written());
    if (r.status === 'ready') {
      // The accession number (or UID) links the order to the study; whether it is the order's patient is checked here.
      const patientIdentity = await checkPatient(this.deps, job, r.studyInstanceUid);
      return { output: { studyInstanceUid: r.studyInstanceUid, instances: r.instances, matchedBy: r.matchedBy, patientIdentity } };
    }
    if (r.status === 'timeout') {
      if (Date.now() + w.sleepMs >= deadline) throw new StageFailure(`the study did not arrive or settle before the deadline: ${r.reason}`, false);
      this.deps.log.info('job.study-not-ready', { jobId: job.id, polls: r.polls, sleepMs: w.sleepMs });
      return ctx.requeue(w.sleepMs);
    }
    throw new StageFailure(r.reason, false);
  }
}

/**
 * A PACS that does not answer is shown on the job while it waits (its lastError, the source's peer: pacs), not only
 * at the deadline; the first answer after it clears it. Checkpoint writes are chained, in poll order, and awaited by
 * written().
 */
class PacsOutageRecorder {
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: StageContext,
    private readonly deps: ScreeningDeps,
    private readonly source: StudySource,
  ) {}

  onPoll(e: PollEvent): void {
    const last = this.ctx.state.lastError;
    if (e.error) {
      if (last?.message !== e.error || Date.now() - Date.parse(last.at) > 60_000) this.record(e.error);
    } else if (last) this.record(undefined);
  }

  written(): Promise<void> {
    return this.writes;
  }

  private record(error: string | undefined): void {
    const { state, job } = this.ctx;
    const prev = state.lastError;
    if (!error && !prev) return;
    const at = new Date().toISOString();
    if (error) {
      const same = prev?.stage === 'wait-for-study' && prev.message === error;
      const peer = this.source.peer;
      state.lastError = { stage: 'wait-for-study', peer, message: error, retryable: true, at, since: same ? (prev?.since ?? prev?.at) : at };
      if (!same) this.deps.log.warn('job.study-wait-pacs-error', { jobId: job.id, error });
      this.ctx.progress(0, `waiting: ${this.source.holder} does not answer`, { lastError: { peer, message: error } });
    } else {
      state.lastError = undefined;
      this.deps.log.info('job.study-wait-pacs-back', { jobId: job.id });
      this.ctx.progress(0);
    }
    const snapshot = structuredClone(state);
    this.writes = this.writes
      .then(() => this.ctx.checkpoint(snapshot))
      .catch((e: unknown) => this.deps.log.warn('job.checkpoint-failed', { jobId: job.id, error: (e as Error).message }));
  }
}
