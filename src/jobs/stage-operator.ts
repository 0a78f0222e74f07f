/**
 * What a stage of a screening job is to the stage runner (stage-runner.ts), after MONAI Deploy's operators: a name
 * (the one stored in the job's checkpoint and shown by the API), the values it takes from earlier stages and gives
 * to later ones in memory (Handover), the checkpointed outputs of earlier stages it reads, and `run`.
 *
 * The runner owns everything around `run`: checkpoints, attempts, the stage timeout, cancel, lock fencing, Redis
 * outages, progress, skip-to and the hand-over itself.
 */
import type { RetrievedSeries } from '../dicomweb/retrieve.js';
import type { ScreeningJobData } from '../domain/job.js';
import type { AnalysisCheckpoint } from './analysis-codec.js';
import type { Fence, JobState, JobStateStore, StageName, StageOutputs } from './job-state.js';

/** The slice of a BullMQ job the runner uses (a fake one in unit tests). */
export interface JobHandle {
  id: string;
  data: ScreeningJobData;
  updateProgress(p: object): Promise<void>;
  moveToDelayed(timestamp: number, token?: string): Promise<void>;
  /** The job's BullMQ lock: with the worker's token, it fences the checkpoint writes (job-state.ts Fence). */
  lock?: Omit<Fence, 'token'>;
}

/** The checkpoint store the runner writes to (JobStateStore in Redis; an in-memory one in unit tests). */
export type CheckpointStore = Pick<JobStateStore, 'get' | 'put' | 'putWithAnalysis' | 'getAnalysis'>;

/** The series a retrieve stage pulled: its volume and slices, with the series attributes the results repeat. */
export interface SeriesVolume {
  retrieved: RetrievedSeries;
  seriesNumber?: number;
  seriesDescription?: string;
}

/**
 * Values a stage hands to later stages in memory, within one run of a job. After a resume (a crash, a retry) a value
 * an earlier run made is not in memory; the runner then gets it back as `HANDOVER_FALLBACKS` says.
 */
export interface Handover {
  /** The chosen series' volume (retrieve → analyze). */
  series: SeriesVolume;
  /** The analysis the result writers render (analyze, or retrieve when it shares an earlier job's → write-*). */
  analysis: AnalysisCheckpoint;
}
export type HandoverKey = keyof Handover;

/**
 * How a hand-over value missing after a resume is got back:
 * - series: not kept anywhere (it is the whole CT): the stage that gives it pulls it again (its `recover`), under the
 *   stage timeout and named after that stage;
 * - analysis: durable: saved atomically with the checkpoint of the stage that gives it, and read back from there; a
 *   missing one (expired, deleted) fails the job for good: it must be re-run from the start.
 */
export const HANDOVER_FALLBACKS: Record<HandoverKey, 'recover' | 'checkpoint'> = { series: 'recover', analysis: 'checkpoint' };

export interface StageContext<In extends HandoverKey = never> {
  readonly job: JobHandle;
  /** The job's checkpoint: a stage may record what it must keep across a crash in it (then call checkpoint()). */
  readonly state: JobState;
  /** The hand-over values the operator declared in `takes`, from memory or their fallback. */
  readonly inputs: Readonly<Pick<Handover, In>>;
  /** Best effort, never awaited: the stage's progress, as a fraction of it, with a detail and extra fields. */
  progress(fraction: number, detail?: string, extra?: object): void;
  /** Writes `snapshot` (default: the state) as the checkpoint, fenced, retried while Redis is unreachable. */
  checkpoint(snapshot?: JobState): Promise<void>;
  /** A Redis call the stage depends on, retried while Redis is unreachable. */
  redis<T>(what: string, fn: () => Promise<T>): Promise<T>;
  /** One step of an operator with `timeout: 'steps'` under the stage timeout. */
  timed<T>(step: Promise<T>): Promise<T>;
  /** Gives the job back to the queue for `delayMs` without counting this attempt; never returns. */
  requeue(delayMs: number): Promise<never>;
  /** Registers a release for what this attempt took (a claim): run if the job stops for good (cancel, failure). */
  onGiveUp(release: () => Promise<void>): void;
}

/** What a finished stage gives: its checkpointed output, hand-over values, and where the job goes on. */
export interface StageDone<N extends StageName = StageName, Out extends HandoverKey = HandoverKey> {
  output?: NonNullable<StageOutputs[N]>;
  gives?: Partial<Pick<Handover, Out>>;
  /** A stage that makes the next ones unnecessary (a shared analysis) names the stage the job goes on at. */
  skipTo?: StageName;
}

export interface Operator<N extends StageName = StageName, In extends HandoverKey = HandoverKey, Out extends HandoverKey = HandoverKey> {
  readonly name: N;
  /** Hand-over values it needs from earlier stages. */
  readonly takes: readonly In[];
  /** Hand-over values it may give to later stages. */
  readonly gives: readonly Out[];
  /** Checkpointed outputs of earlier stages it reads (state.outputs). */
  readonly reads: readonly StageName[];
  /** Whether a run of it counts one of the stage's attempts. Default true. */
  readonly countsAttempts?: boolean;
  /**
   * 'stage' (default): the whole run within the stage timeout; 'steps': each step the operator marks with ctx.timed
   * (a stage of several network rounds); 'none': the operator bounds itself (a wait with its own deadline).
   */
  readonly timeout?: 'stage' | 'steps' | 'none';
  run(ctx: StageContext<In>): Promise<StageDone<N, Out>>;
  /** Gets back a value this operator gives, missing after a resume (see HANDOVER_FALLBACKS). */
  recover?(key: Out, ctx: StageContext<never>): Promise<Handover[Out]>;
  /** Releases what a finished run of it holds beyond the job (recorded in its output) when the job stops for good. */
  release?(job: JobHandle, state: JobState): Promise<void>;
}
