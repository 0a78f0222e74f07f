/**
 * A Redis call a job depends on (a checkpoint read or write, a claim), retried while Redis is unreachable (a restart,
 * a network blip): RedisUnavailableError once it has stayed away longer than `limitMs`. Other errors pass at once.
 */
import type { Logger } from '../observability/log.js';
import { isRedisConnectionError } from '../redis/connection.js';
import { RedisUnavailableError } from './stage-errors.js';

export interface RedisRetry {
  jobId: string;
  /** Default 30 s. */
  limitMs?: number;
  log: Logger;
}

export async function retryWhileRedisDown<T>(what: string, fn: () => Promise<T>, o: RedisRetry): Promise<T> {
  const limit = o.limitMs ?? 30_000;
  const started = Date.now();
  let wait = 100;
  for (let tries = 1; ; tries++) {
    try {
      return await fn();
    } catch (e) {
      if (!isRedisConnectionError(e)) throw e;
      if (Date.now() - started + wait > limit) throw new RedisUnavailableError(e);
      if (tries === 1) o.log.warn('job.redis-retry', { jobId: o.jobId, what, error: (e as Error).message });
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 2000);
    }
  }
}
