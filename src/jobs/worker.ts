/**
 * A BullMQ worker that runs screening jobs with ScreeningRunner. Any number of these, in any number of processes
 * on any number of machines, share one queue on one Redis: that is how a site scales out (GPU workers beside CPU
 * ones). A worker killed mid-job leaves a stalled job that BullMQ hands to another worker, which resumes it at the
 * checkpointed stage.
 */
import { type Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/log.js';
import type { ScreeningJobData } from './queue.js';
import type { ScreeningResult, ScreeningRunner } from './screening.js';

export interface ScreeningWorkerOptions {
  connection: Redis;
  queueName: string;
  prefix: string;
  concurrency: number;
  runner: ScreeningRunner;
  log: Logger;
  /** How long a job's lock lasts without renewal; a worker silent this long is presumed dead. Default 60 s. */
  lockDurationMs?: number;
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
        },
        token,
      );
    },
    {
      connection: o.connection,
      prefix: `${o.prefix}:bull`,
      concurrency: o.concurrency,
      // The model stage holds the event loop for seconds at a time (resampling, lung mask): a generous lock keeps
      // a busy worker from being taken for a dead one.
      lockDuration: o.lockDurationMs ?? 60_000,
      maxStalledCount: 3,
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
