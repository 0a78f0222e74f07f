import { createHash } from 'node:crypto';
import { type Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Order } from '../orders/order.js';

/** What a screening job carries: the order as parsed at intake. */
export interface ScreeningJobData {
  order: Order;
  receivedAt: string;
  /** Sender's MSH-10 of the message that created (or last updated) the job. */
  messageControlId: string;
}

export type ScreeningQueue = Queue<ScreeningJobData>;
export type ScreeningJob = Job<ScreeningJobData>;

/**
 * The job id is a hash of sender + placer order number: stable across resends, and free of PHI so it
 * can appear in logs, URLs and metrics.
 */
export function jobIdFor(sender: { application: string; facility: string }, placerOrderNumber: string): string {
  const h = createHash('sha256').update(`${sender.application}\u0000${sender.facility}\u0000${placerOrderNumber}`).digest('hex');
  return `ord-${h.slice(0, 32)}`;
}

export function createScreeningQueue(connection: Redis, name: string, prefix: string): ScreeningQueue {
  const queue = new Queue<ScreeningJobData>(name, {
    connection,
    prefix: `${prefix}:bull`,
    // BullMQ checks the Redis version once, with INFO, when the queue's connection first comes up, and keeps that
    // promise: an INFO that times out (the intake's connection has a short command timeout, and the event loop may
    // stall at start) would leave the queue failing every call for good, so every order NAKed. The workers'
    // connections (no command timeout) still check the version.
    skipVersionCheck: true,
    defaultJobOptions: {
      attempts: 5,
      backoff: { type: 'exponential', delay: 5000 },
      removeOnComplete: false,
      removeOnFail: false,
    },
  });
  // Connection errors surface on each call as a rejected promise; the event would otherwise crash the process.
  queue.on('error', () => {});
  return queue;
}

/** States in which a job has not started and can simply be withdrawn. */
export const NOT_STARTED = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children']);
