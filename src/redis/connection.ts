/** Redis connections and what their errors mean; shared by the intake, the workers, the HTTP layer and the probes. */
import { Redis } from 'ioredis';

/**
 * A Redis connection for request/response paths (MLLP intake, HTTP): commands fail fast while Redis is
 * unreachable instead of queueing in memory, so the sender gets a NAK and retries.
 */
export function connectRedis(url: string, commandTimeoutMs: number): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(commandTimeoutMs, 1000),
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    lazyConnect: false,
    // No auto-pipelining: the intake batches its own round trips (orders/redis-ledger-channel.ts, one socket write per batch), and
    // each auto-pipeline would be a pipeline, onto which ioredis copies every script BullMQ defined.
    enableAutoPipelining: false,
  });
}

/**
 * Whether an error is Redis being unreachable rather than anything about the job: the connection dropped or is
 * reconnecting (ioredis without an offline queue: "Stream isn't writeable"; "Connection is closed"), the command
 * ran out of retries or time, or the socket was refused or reset. Such an error says nothing about the job, so it
 * must not count as one of the job's attempts.
 */
export function isRedisConnectionError(e: unknown): boolean {
  if (!e || typeof e !== 'object') return false;
  const err = e as { name?: string; message?: string; code?: string };
  if (err.name === 'MaxRetriesPerRequestError') return true;
  if (err.code && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED'].includes(err.code))
    return true;
  const m = err.message ?? '';
  return /Stream isn't writeable|Connection is closed|Reached the max retries per request limit|Command timed out|Redis connection is (?!ready)|connect ECONNREFUSED|read ECONNRESET|write EPIPE|LOADING Redis is loading/i.test(
    m,
  );
}

/** Resolves when the connection is ready, or after `ms` (the caller decides what down means). */
export function waitReady(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      redis.off('ready', onReady);
      resolve(false);
    }, ms);
    const onReady = () => {
      clearTimeout(t);
      resolve(true);
    };
    redis.once('ready', onReady);
  });
}

/** Deletes every key under `prefix:` (demo and test clean-up; SCAN, never KEYS). */
export async function deleteByPrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
