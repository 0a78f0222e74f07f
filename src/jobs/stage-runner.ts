/**
 * Runs a job's stages (operators, stage-operator.ts) in order from its checkpoint to the end, or to a delay, a cancel
 * or a failure. Each stage is checkpointed in Redis (job-state.ts) before the next begins, so a worker that dies
 * mid-job is replaced by one that resumes at the stage it was in; finished stages never run again.
 *
 * Owned here, for every stage alike:
 * - attempts: counted once, when a stage starts (a stage that gives the job back to the queue to wait takes its
 *   attempt back); a stage started `stageAttempts` times without finishing (its worker died in it each time) fails
 *   the job for good;
 * - failures: a retryable one records lastError and puts the job back in the queue with exponential backoff until
 *   the stage's attempts are used up; a permanent one fails the job at once (the dead letter);
 * - the stage timeout, cancel (at the next stage boundary), lock fencing (a lost lock stops the job untouched),
 *   progress (best effort; a job deleted from the queue stops at the next boundary);
 * - Redis outages: a checkpoint read or write is retried while Redis is unreachable (settings.redisOutageMs), and if
 *   it stays away the job goes back to the delayed set (or, when even that fails, is left to BullMQ's stalled-job
 *   check) without counting an attempt;
 * - the hand-over of values between stages in memory, with the fallbacks of HANDOVER_FALLBACKS after a resume, and
 *   skip-to.
 */
import { DelayedError, UnrecoverableError } from 'bullmq';
import type { OrderStatus } from '../domain/order.js';
import type { Logger } from '../observability/log.js';
import { errorPeer, METRICS } from '../observability/metric-names.js';
import { type MetricsSink, noMetrics } from '../observability/recorder.js';
import { isRedisConnectionError } from '../redis/connection.js';
import { type ErrorPeer, type Fence, type JobState, LockLostError, newJobState, type StageName } from './job-state.js';
import { isJobGoneError } from './redis.js';
import { retryWhileRedisDown } from './redis-outage.js';
import { backoffMs, classifyError, JobGoneError, PatientIdentityError, RedisUnavailableError, StageFailure, withTimeout } from './stage-errors.js';
import {
  type CheckpointStore,
  HANDOVER_FALLBACKS,
  type Handover,
  type HandoverKey,
  type JobHandle,
  type Operator,
  type StageContext,
  type StageDone,
} from './stage-operator.js';

export interface StageRunnerSettings {
  /** Per stage, for one attempt (operators with timeout 'none' excepted). */
  stageTimeoutMs: number;
  /** Attempts per stage before the job fails. */
  stageAttempts: number;
  backoffMs: number;
  backoffMaxMs: number;
  /** How long a Redis call keeps retrying while Redis is unreachable before the job is given back. Default 30 s. */
  redisOutageMs?: number;
}

export interface StageRunnerDeps {
  states: CheckpointStore;
  /** The order's status as the intake keeps it; markCancelled records that the job stopped for a cancel. */
  orders: { status(jobId: string): Promise<OrderStatus | null>; markCancelled(jobId: string, note: string): Promise<void> };
  settings: StageRunnerSettings;
  log: Logger;
  metrics?: MetricsSink;
}

export class StageRunner {
  constructor(
    readonly operators: readonly Operator[],
    readonly deps: StageRunnerDeps,
  ) {
    checkPipeline(operators);
  }

  /** Runs the job from its checkpoint to the end (or to a delay, a cancel or a failure); gives its last checkpoint. */
  async run(job: JobHandle, token?: string): Promise<JobState> {
    const { log, states, settings } = this.deps;
    const fence: Fence | undefined = job.lock && token ? { ...job.lock, token } : undefined;
    const run = new JobRun(this, job, token, fence);
    try {
      return await run.toEnd();
    } catch (e) {
      if (e instanceof LockLostError) {
        // Another worker has the job now (or will, once the stalled-job check sees the lapsed lock): stop without
        // touching it; DelayedError tells BullMQ this worker is done with it.
        log.warn('job.lock-lost', { jobId: job.id, stage: run.state?.stage });
        throw new DelayedError();
      }
      if (!(e instanceof RedisUnavailableError) && !isRedisConnectionError(e)) throw e;
      // Redis stayed away (or dropped under a command the runner does not retry): give the job back without an
      // attempt. The stage's attempt was taken back already; record that when Redis lets us.
      const s = run.state;
      log.warn('job.redis-unavailable', { jobId: job.id, stage: s?.stage, error: (e as Error).message });
      if (s) await states.put(touch(s), fence).catch(() => {});
      try {
        await job.moveToDelayed(Date.now() + Math.min(settings.backoffMs, 5000), token);
      } catch (m) {
        // Not even that: the job stays active without a lock renewal (DelayedError tells BullMQ to leave it), and
        // BullMQ's stalled-job check hands it to a worker once its lock expires. Still no attempt counted.
        log.warn('job.redis-unavailable-not-delayed', { jobId: job.id, error: (m as Error).message });
      }
      throw new DelayedError();
    }
  }
}

/** Throws when a stage takes a value, or reads an output, that no earlier stage gives (a pipeline wired wrong). */
export function checkPipeline(operators: readonly Operator[]): void {
  const given = new Set<HandoverKey>();
  const before = new Set<StageName>();
  for (const op of operators) {
    for (const key of op.takes) if (!given.has(key)) throw new Error(`stage ${op.name} takes ${key}, which no earlier stage gives`);
    for (const stage of op.reads) if (!before.has(stage)) throw new Error(`stage ${op.name} reads the output of ${stage}, which does not run before it`);
    for (const key of op.gives) given.add(key);
    before.add(op.name);
  }
}

/** One run of one job: its checkpoint, the hand-over values in memory, and what it must release if it gives up. */
class JobRun {
  state: JobState | undefined;
  private readonly memory: Partial<Handover> = {};
  private readonly releases: (() => Promise<void>)[] = [];
  /** The job's hash is gone from the queue (a progress update said so): stop at the next stage boundary. */
  private gone = false;
  private readonly metrics: MetricsSink;

  constructor(
    private readonly runner: StageRunner,
    private readonly job: JobHandle,
    private readonly token: string | undefined,
    private readonly fence: Fence | undefined,
  ) {
    this.metrics = runner.deps.metrics ?? noMetrics;
  }

  private get deps(): StageRunnerDeps {
    return this.runner.deps;
  }

  private get ops(): readonly Operator[] {
    return this.runner.operators;
  }

  async toEnd(): Promise<JobState> {
    const state = (await this.redis('read checkpoint', () => this.deps.states.get(this.job.id))) ?? newJobState(this.job.id);
    this.state = state;
    while (state.stage !== 'done' && state.stage !== 'cancelled') {
      const op = this.operator(state.stage);
      this.stopIfGone(op.name);
      if ((await this.redis('read order status', () => this.deps.orders.status(this.job.id))) === 'cancel-requested') {
        await this.cancel(state, op.name);
        break;
      }
      const index = this.ops.indexOf(op);
      await this.report({ stage: op.name, stageIndex: index, stages: this.ops.length, percent: Math.round((index / this.ops.length) * 100) });
      this.stopIfGone(op.name);
      await this.startAttempt(state, op);
      const t0 = performance.now();
      let done: StageDone;
      try {
        done = await this.runOperator(state, op);
      } catch (e) {
        return await this.fail(state, op, e);
      }
      await this.finish(state, op, done, Math.round(performance.now() - t0));
    }
    await this.report({ stage: state.stage, stageIndex: this.ops.length, stages: this.ops.length, percent: 100 });
    return state;
  }

  private operator(name: StageName): Operator {
    const op = this.ops.find((o) => o.name === name);
    if (!op) throw new Error(`job ${this.job.id} is at stage ${name}, which this runner does not have`);
    return op;
  }

  private stopIfGone(stage: StageName): void {
    if (!this.gone) return;
    this.deps.log.warn('job.gone', { jobId: this.job.id, stage });
    throw new JobGoneError(this.job.id, stage);
  }

  /** Progress is best effort, never a stage failure: Redis may be away for a moment, or the job's hash deleted. */
  private report(p: object): Promise<void> {
    return this.job.updateProgress(p).catch((e: unknown) => {
      if (isJobGoneError(e)) this.gone = true;
      this.deps.log.debug('job.progress-failed', { jobId: this.job.id, error: (e as Error)?.message ?? String(e) });
    });
  }

  private redis<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retryWhileRedisDown(what, fn, { jobId: this.job.id, limitMs: this.deps.settings.redisOutageMs, log: this.deps.log });
  }

  private put(s: JobState): Promise<void> {
    return this.redis('write checkpoint', () => this.deps.states.put(touch(s), this.fence));
  }

  private async cancel(state: JobState, stage: StageName): Promise<void> {
    state.stage = 'cancelled';
    state.finishedAt = new Date().toISOString();
    await this.put(state);
    await this.redis('record cancel', () => this.deps.orders.markCancelled(this.job.id, `stopped before stage ${stage}`));
    await this.giveUp(state);
    this.deps.log.info('job.cancelled', { jobId: this.job.id, stage });
    this.metrics.inc(METRICS.jobsCancelled);
  }

  /** The one place attempts are counted; checkpoints the stage as started. */
  private async startAttempt(state: JobState, op: Operator): Promise<void> {
    const stage = op.name;
    if (op.countsAttempts !== false) {
      const started = state.attempts[stage] ?? 0;
      if (started >= this.deps.settings.stageAttempts) {
        // Every earlier attempt either failed (then the last failure would have failed the job) or never ended:
        // the worker died in it each time (out of memory, a crash in native code), so the study is the cause.
        const message = `the stage was started ${started} times without finishing (the worker died in it each time)`;
        state.lastError = { stage, peer: 'internal', message, retryable: true, at: new Date().toISOString() };
        await this.put(state);
        this.deps.log.error('job.stage-failed', { jobId: this.job.id, stage, attempts: started, error: message });
        this.metrics.inc(METRICS.jobsFailed, { stage });
        await this.giveUp(state);
        throw new UnrecoverableError(`${stage}: ${message}`);
      }
      state.attempts[stage] = started + 1;
    }
    await this.put(state);
  }

  /** Takes back the attempt startAttempt counted (the job waits, or Redis failed it, through no fault of the stage). */
  private uncountAttempt(state: JobState, op: Operator): void {
    if (op.countsAttempts !== false) state.attempts[op.name] = Math.max(0, (state.attempts[op.name] ?? 1) - 1);
  }

  private async runOperator(state: JobState, op: Operator): Promise<StageDone> {
    const inputs = await this.inputs(state, op);
    const run = op.run(this.context(state, op, inputs));
    return (op.timeout ?? 'stage') === 'stage' ? withTimeout(run, this.deps.settings.stageTimeoutMs, op.name) : run;
  }

  /** The hand-over values `op` takes: from memory, or after a resume from their fallback (HANDOVER_FALLBACKS). */
  private async inputs(state: JobState, op: Operator): Promise<Partial<Handover>> {
    const inputs: Partial<Handover> = {};
    for (const key of op.takes) {
      const value = this.memory[key] ?? (await this.fallback(state, op, key));
      Object.assign(inputs, { [key]: value });
    }
    return inputs;
  }

  private async fallback(state: JobState, op: Operator, key: HandoverKey): Promise<Handover[HandoverKey]> {
    if (HANDOVER_FALLBACKS[key] === 'checkpoint') {
      const analysis = await this.redis('read analysis', () => this.deps.states.getAnalysis(this.job.id));
      if (!analysis) throw new StageFailure('the analysis checkpoint is missing (expired or deleted); re-run the job from the start', false);
      return analysis;
    }
    const before = this.ops.slice(0, this.ops.indexOf(op));
    const giver = before.reverse().find((o) => o.gives.includes(key) && o.recover);
    if (!giver?.recover) throw new StageFailure(`${key} is not in memory and no stage can get it back; re-run the job from the start`, false);
    return withTimeout(giver.recover(key, this.context(state, op, {})), this.deps.settings.stageTimeoutMs, giver.name);
  }

  private context(state: JobState, op: Operator, inputs: Partial<Handover>): StageContext<HandoverKey> {
    const index = this.ops.indexOf(op);
    return {
      job: this.job,
      state,
      inputs: inputs as Handover,
      progress: (fraction, detail, extra) => void this.report({ ...progressOf(op.name, index, this.ops.length, fraction, detail), ...extra }),
      checkpoint: (snapshot = state) => this.put(snapshot),
      redis: (what, fn) => this.redis(what, fn),
      timed: (step) => withTimeout(step, this.deps.settings.stageTimeoutMs, op.name),
      requeue: async (delayMs) => {
        if (op.countsAttempts !== false) {
          this.uncountAttempt(state, op);
          await this.put(state);
        }
        await this.job.moveToDelayed(Date.now() + delayMs, this.token);
        throw new DelayedError();
      },
      onGiveUp: (release) => void this.releases.push(release),
    };
  }

  /** A stage threw: given back to Redis' outage handling, retried with backoff, or the job fails for good. */
  private async fail(state: JobState, op: Operator, e: unknown): Promise<never> {
    const { log, settings } = this.deps;
    const stage = op.name;
    if (e instanceof DelayedError || e instanceof LockLostError) throw e;
    if (e instanceof RedisUnavailableError || isRedisConnectionError(e)) {
      // Redis, not the stage: take the attempt back; StageRunner.run gives the job back to the queue.
      this.uncountAttempt(state, op);
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
    await this.put(state);
    const attempts = state.attempts[stage] ?? 1;
    if (f.retryable && attempts < settings.stageAttempts) {
      const delay = backoffMs(attempts, settings);
      log.warn('job.stage-retry', { jobId: this.job.id, stage, attempt: attempts, delayMs: delay, error: f.message });
      this.metrics.inc(METRICS.stageErrors, { stage, peer: errorPeer(stage, e), retryable: 'true' });
      await this.job.moveToDelayed(Date.now() + delay, this.token);
      throw new DelayedError();
    }
    log.error('job.stage-failed', { jobId: this.job.id, stage, attempts, retryable: f.retryable, error: f.message });
    await this.giveUp(state);
    this.metrics.inc(METRICS.stageErrors, { stage, peer: errorPeer(stage, e), retryable: 'false' });
    this.metrics.inc(METRICS.jobsFailed, { stage });
    throw new UnrecoverableError(`${stage}: ${f.message}`);
  }

  /** The job stops for good (cancelled or failed): what it holds is released, best effort. */
  private async giveUp(state: JobState): Promise<void> {
    const releases = [...this.ops.map((op) => () => op.release?.(this.job, state) ?? Promise.resolve()), ...this.releases];
    for (const release of releases) await release().catch(() => {});
  }

  /** Records the stage's output, keeps what later stages take, and checkpoints the job at its next stage. */
  private async finish(state: JobState, op: Operator, done: StageDone, ms: number): Promise<void> {
    const stage = op.name;
    state.timingsMs[stage] = ms;
    if (done.output) Object.assign(state.outputs, { [stage]: done.output });
    Object.assign(this.memory, done.gives);
    const next = done.skipTo ?? this.ops[this.ops.indexOf(op) + 1]?.name;
    state.stage = next ?? 'done';
    state.lastError = undefined;
    if (!next) state.finishedAt = new Date().toISOString();
    this.forgetUnneeded(next);
    // The durable hand-over (HANDOVER_FALLBACKS) is saved atomically with the state that points past its stage.
    const analysis = done.gives?.analysis;
    if (analysis) await this.redis('write analysis', () => this.deps.states.putWithAnalysis(touch(state), analysis, this.fence));
    else await this.put(state);
    this.deps.log.info('job.stage-done', { jobId: this.job.id, stage, ms });
    this.metrics.observe(METRICS.stageDuration, { stage }, ms / 1000);
    if (!next) this.metrics.inc(METRICS.jobsCompleted, { verdict: state.outputs.analyze?.verdict ?? 'none' });
  }

  /** Drops hand-over values no stage from `next` on takes (the CT volume once analysed). */
  private forgetUnneeded(next: StageName | undefined): void {
    const from = next ? this.ops.findIndex((o) => o.name === next) : this.ops.length;
    const needed = new Set(this.ops.slice(from).flatMap((o) => o.takes));
    for (const key of Object.keys(this.memory) as HandoverKey[]) if (!needed.has(key)) delete this.memory[key];
  }
}

/** The peer a stage's error belongs to, as the job's lastError names it (metrics say 'emr' for the ORU receiver). */
function lastErrorPeer(stage: StageName, e: unknown): ErrorPeer {
  const p = errorPeer(stage, e);
  return p === 'emr' ? 'emr-oru' : p === 'pacs' || p === 'pacs-dimse' || p === 'fhir' || p === 'model' ? p : 'internal';
}

function touch(s: JobState): JobState {
  s.updatedAt = new Date().toISOString();
  return s;
}

function progressOf(stage: StageName, index: number, stages: number, fraction: number, detail?: string) {
  return {
    stage,
    stageIndex: index,
    stages,
    percent: Math.round(((index + Math.min(1, Math.max(0, fraction))) / stages) * 100),
    ...(detail ? { detail } : {}),
  };
}
