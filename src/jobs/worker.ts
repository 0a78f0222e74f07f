/**
 * A BullMQ worker that runs screening jobs with ScreeningRunner. Any number of these, in any number of processes
 * on any number of machines, share one queue on one Redis: that is how a site scales out (GPU workers beside CPU
 * ones). A worker killed mid-job leaves a stalled job that BullMQ hands to another worker, which resumes it at the
 * checkpointed stage.
 */
import { type Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ScreeningJobData } from '../domain/job.js';
import type { Logger } from '../observability/log.js';
import type { ScreeningResult, ScreeningRunner } from './screening.js';

export interface ScreeningWorkerOptions {
  connection: Redis;
  queueName: string;
  prefix: string;
  concurrency: number;
  runner: ScreeningRunner;
  log: Logger;
  /**
   * How long a job's lock lasts without renewal; a worker silent this long is presumed dead. Default 8 s. BullMQ
   * renews it from a timer every quarter of this, so the event loop may be held for up to three quarters of it.
   */
  lockDurationMs?: number;
  /** How often this worker puts jobs whose lock expired back in the queue. Default 3 s. */
  stalledIntervalMs?: number;
}

export function startScreeningWorker(o: ScreeningWorkerOptions): Worker<ScreeningJobData, ScreeningResult> {
  const worker = new Worker<ScreeningJobData, ScreeningResult>(
    o.queueName,
    async (job: Job<ScreeningJobData, ScreeningResult>, token?: string) => {
      if (!job.id) throw new Error('a screening job without an id');
      return o.runner.run(
        {
          id: job.id,
          data: job.data,
          updateProgress: (p) => job.updateProgress(p),
          moveToDelayed: (ts, t) => job.moveToDelayed(ts, t),
          lock: {
            lockKey: `${o.prefix}:bull:${o.queueName}:${job.id}:lock`,
            activeKey: `${o.prefix}:bull:${o.queueName}:active`,
            jobId: job.id,
            lockMs: o.lockDurationMs ?? 8000,
          },
        },
        token,
      );
    },
    {
      connection: o.connection,
      prefix: `${o.prefix}:bull`,
      concurrency: o.concurrency,
      // A killed worker's job is back in the queue at most lockDuration + stalledInterval after its last renewal
      // (11 s by default). Renewing every quarter of the lock (not BullMQ's half) leaves the event loop room to be
      // held by synchronous work (resampling, the lung mask) for three quarters of it before the lock lapses.
      lockDuration: o.lockDurationMs ?? 8000,
      lockRenewTime: Math.max(500, Math.floor((o.lockDurationMs ?? 8000) / 4)),
      stalledInterval: o.stalledIntervalMs ?? 3000,
      // A worker's death is not the job's fault: BullMQ's own stall limit (which fails the job after that many
      // deaths over its whole life, whatever the stage) is out of the way; ScreeningRunner fails a job whose stage
      // was started CTGATE_STAGE_ATTEMPTS times without finishing (a study that kills its worker each time).
      maxStalledCount: 1_000_000,
      autorun: true,
    },
  );
  worker.on('error', (e) => o.log.error('worker.error', { error: e.message }));
  worker.on('failed', (job, e) => {
    if (job && e.name !== 'DelayedError') o.log.error('job.failed', { jobId: job.id, error: e.message });
  });
  worker.on('completed', (job, r) => o.log.info('job.completed', { jobId: job.id, status: r.status, verdict: r.verdict }));
  return worker;
}
