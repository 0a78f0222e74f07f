/**
 * In-memory stand-ins for what the stage runner and ScreeningRunner use around Redis and BullMQ: the checkpoint
 * store, the order status, the BullMQ job. For unit tests without Redis.
 */

import type { ScreeningJobData } from '../../src/domain/job.js';
import type { OrderStatus } from '../../src/domain/order.js';
import type { AnalysisCheckpoint } from '../../src/jobs/analysis-codec.js';
import type { Fence, JobState } from '../../src/jobs/job-state.js';
import type { CheckpointStore, JobHandle } from '../../src/jobs/stage-operator.js';
import { sampleOrder } from './result-context.js';

/** An error ioredis gives while Redis is unreachable. */
export function redisDown(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
}

/** Checkpoints kept as JSON (as Redis would), logging `put:<stage>` / `putWithAnalysis:<stage>` to `events`. */
export class MemoryCheckpoints implements CheckpointStore {
  private readonly states = new Map<string, string>();
  readonly analyses = new Map<string, AnalysisCheckpoint>();
  /** When set, a put throws what it returns (a LockLostError, a Redis connection error). */
  failPut?: () => Error | undefined;
  /** When set and returning an error, a get throws it. */
  failGet?: () => Error | undefined;

  constructor(private readonly events: string[] = []) {}

  seed(state: JobState, analysis?: AnalysisCheckpoint): void {
    this.states.set(state.jobId, JSON.stringify(state));
    if (analysis) this.analyses.set(state.jobId, analysis);
  }

  saved(jobId: string): JobState | null {
    const v = this.states.get(jobId);
    return v ? (JSON.parse(v) as JobState) : null;
  }

  async get(jobId: string): Promise<JobState | null> {
    const e = this.failGet?.();
    if (e) throw e;
    return this.saved(jobId);
  }

  async put(state: JobState, _fence?: Fence): Promise<void> {
    const e = this.failPut?.();
    if (e) throw e;
    this.events.push(`put:${state.stage}`);
    this.states.set(state.jobId, JSON.stringify(state));
  }

  async putWithAnalysis(state: JobState, analysis: AnalysisCheckpoint, _fence?: Fence): Promise<void> {
    const e = this.failPut?.();
    if (e) throw e;
    this.events.push(`putWithAnalysis:${state.stage}`);
    this.states.set(state.jobId, JSON.stringify(state));
    this.analyses.set(state.jobId, analysis);
  }

  async getAnalysis(jobId: string): Promise<AnalysisCheckpoint | null> {
    const e = this.failGet?.();
    if (e) throw e;
    return this.analyses.get(jobId) ?? null;
  }
}

export class MemoryOrders {
  readonly statuses = new Map<string, OrderStatus>();
  readonly cancelled: { jobId: string; note: string }[] = [];

  async status(jobId: string): Promise<OrderStatus | null> {
    return this.statuses.get(jobId) ?? 'queued';
  }

  async markCancelled(jobId: string, note: string): Promise<void> {
    this.statuses.set(jobId, 'cancelled');
    this.cancelled.push({ jobId, note });
  }
}

/** A BullMQ job as the runner sees it: progress and delays recorded; `gone` makes progress fail as for a deleted job. */
export class FakeJob implements JobHandle {
  readonly data: ScreeningJobData;
  readonly progress: { stage?: string; percent?: number; detail?: string }[] = [];
  readonly delayedUntil: number[] = [];
  gone = false;

  constructor(
    readonly id: string,
    data: Partial<ScreeningJobData> = {},
  ) {
    this.data = { order: sampleOrder(), receivedAt: new Date().toISOString(), messageControlId: 'MSG0001', ...data };
  }

  async updateProgress(p: object): Promise<void> {
    if (this.gone) throw new Error(`Missing key for job ${this.id}. updateProgress`);
    this.progress.push(p);
  }

  async moveToDelayed(timestamp: number): Promise<void> {
    this.delayedUntil.push(timestamp);
  }
}
