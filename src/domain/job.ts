/** A screening job as every part sees it: what it carries and how its id is made (the queue itself is src/jobs/queue.ts). */
import { createHash } from 'node:crypto';
import type { Order } from './order.js';

/** What a screening job carries: the order as parsed at intake. */
export interface ScreeningJobData {
  order: Order;
  receivedAt: string;
  /** Sender's MSH-10 of the message that created (or last updated) the job. */
  messageControlId: string;
}

/**
 * The job id is a hash of sender + placer order number: stable across resends, and free of PHI so it
 * can appear in logs, URLs and metrics.
 */
export function jobIdFor(sender: { application: string; facility: string }, placerOrderNumber: string): string {
  const h = createHash('sha256').update(`${sender.application}\u0000${sender.facility}\u0000${placerOrderNumber}`).digest('hex');
  return `ord-${h.slice(0, 32)}`;
}
