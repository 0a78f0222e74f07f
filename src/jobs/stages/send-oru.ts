/**
 * send-oru: sends the HL7 ORU^R01 to the EMR with the configured writer, at most once across worker crashes.
 *
 * Takes: the analysis. Reads: write-fhir's report (the ORU names it). Gives: the EMR's answer (checkpointed).
 */
import type { ResultContext } from '../../results/context.js';
import { oruControlId } from '../../results/oru/encode.js';
import type { StageOutputs } from '../job-state.js';
import type { ResultWriters, ScreeningDeps } from '../screening-deps.js';
import type { Operator, StageContext, StageDone } from '../stage-operator.js';
import { resultContextOf } from './result-context.js';

type OruOutput = NonNullable<StageOutputs['send-oru']>;

export class SendOru implements Operator<'send-oru', 'analysis', never> {
  readonly name = 'send-oru';
  readonly takes = ['analysis'] as const;
  readonly gives = [] as const;
  readonly reads = ['wait-for-study', 'retrieve', 'write-fhir'] as const;

  constructor(private readonly deps: ScreeningDeps) {}

  async run(ctx: StageContext<'analysis'>): Promise<StageDone<'send-oru', never>> {
    const send = this.deps.writers.oru;
    if (!send) return { output: { skipped: 'CTGATE_ORU_HOST is not set' } };
    return { output: await this.sendOnce(ctx, resultContextOf(ctx), send) };
  }

  /**
   * Sends the ORU at most once across worker crashes: "sending" (with its MSH-10) is checkpointed before the first
   * byte goes out and cleared by the send's outcome in this process (ACK, NAK, error: the stage's retries then
   * resend with the same MSH-10, as before). A job that resumes at send-oru and finds "sending" without an outcome
   * died in between, so the EMR may have the message: with oruUnconfirmed 'hold' (the default) the stage ends
   * without a resend, recorded as deliveryUnknown (on the job's API record and page) for a person to check in the
   * EMR; with 'resend' it is sent once more with the same MSH-10 and flagged possibleDuplicate.
   */
  private async sendOnce(ctx: StageContext<'analysis'>, results: ResultContext, send: NonNullable<ResultWriters['oru']>): Promise<OruOutput> {
    const { state } = ctx;
    const pending = state.oruSending;
    if (pending && this.deps.settings.oruUnconfirmed !== 'resend') {
      state.oruSending = undefined;
      this.deps.log.warn('job.oru-delivery-unknown', { jobId: results.jobId, controlId: pending.controlId, since: pending.at });
      return {
        controlId: pending.controlId,
        ackCode: 'unknown',
        attempts: 0,
        deliveryUnknown: `a worker stopped after starting to send ORU ${pending.controlId} at ${pending.at} and before recording the EMR's answer; not resent (CTGATE_ORU_UNCONFIRMED=hold): check the EMR for MSH-10 ${pending.controlId}`,
      };
    }
    state.oruSending = { controlId: oruControlId(results.jobId), at: new Date().toISOString() };
    await ctx.checkpoint();
    let out: OruOutput;
    try {
      out = await send(results, state.outputs['write-fhir']);
    } catch (e) {
      // The outcome is known here (a NAK, refused, no ACK in time): the stage's own retry decides, same MSH-10.
      state.oruSending = undefined;
      const unacked = (e as { unacked?: unknown }).unacked;
      if (typeof unacked === 'number' && unacked > 0) state.oruUnacked = (state.oruUnacked ?? 0) + unacked;
      throw e;
    }
    testCrashPoint('oru-ack');
    const unacked = (state.oruUnacked ?? 0) + ('unacked' in out ? (out.unacked ?? 0) : 0);
    if (pending) this.deps.log.warn('job.oru-resent-unconfirmed', { jobId: results.jobId, controlId: pending.controlId });
    state.oruSending = undefined;
    return 'controlId' in out && (pending || unacked > 0) ? { ...out, ...(unacked ? { unacked } : {}), possibleDuplicate: true } : out;
  }
}

/**
 * Test-only (never set in production): CTGATE_TEST_CRASH_AFTER=oru-ack SIGKILLs the worker right after the EMR's
 * ACK, before the send-oru checkpoint, to test the reconcile in sendOnce.
 */
function testCrashPoint(point: 'oru-ack'): void {
  if (process.env.CTGATE_TEST_CRASH_AFTER === point) process.kill(process.pid, 'SIGKILL');
}
