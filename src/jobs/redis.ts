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

/** BullMQ refusing a job command because the job, or this worker's lock on it, is gone from Redis. */
export function isJobGoneError(e: unknown): boolean {
  const m = (e as { message?: string } | null)?.message ?? '';
  return /Missing key for job|Missing lock for job|Lock mismatch for job/i.test(m);
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

/** Whether Redis persists writes in its append-only file, and how that was learnt. */
export interface RedisPersistence {
  /** AOF on; null when neither CONFIG GET nor INFO told. */
  aof: boolean | null;
  /** CONFIG (CONFIG GET appendonly) or INFO (INFO persistence, aof_enabled) when CONFIG is disabled or renamed. */
  via?: 'CONFIG' | 'INFO';
  /** appendfsync (always, everysec, no), when CONFIG answered. */
  fsync?: string;
  /** Why it could not be told. */
  error?: string;
}

/** Asks Redis whether it persists: CONFIG GET appendonly, or INFO persistence where CONFIG is disabled (managed Redis). */
export async function redisPersistence(redis: Redis): Promise<RedisPersistence> {
  try {
    // One pattern (Redis before 7 takes only one): appendonly, appendfsync, appendfilename, appenddirname.
    const r = (await redis.call('CONFIG', 'GET', 'append*')) as unknown;
    if (Array.isArray(r)) {
      const map = new Map<string, string>();
      for (let i = 0; i + 1 < r.length; i += 2) map.set(String(r[i]).toLowerCase(), String(r[i + 1]).toLowerCase());
      const aof = map.get('appendonly');
      if (aof !== undefined) return { aof: aof === 'yes', via: 'CONFIG', fsync: map.get('appendfsync') };
    }
  } catch {
    // CONFIG renamed or disabled: INFO says it too.
  }
  try {
    const m = /^aof_enabled:(\d)/m.exec(await redis.info('persistence'));
    if (m) return { aof: m[1] === '1', via: 'INFO' };
    return { aof: null, error: 'neither CONFIG GET appendonly nor INFO persistence (aof_enabled) answered' };
  } catch (e) {
    return { aof: null, error: `neither CONFIG GET appendonly nor INFO persistence answered (${(e as Error).message.slice(0, 120)})` };
  }
}

/** Why orders must not be acknowledged on this Redis, or null when it persists. Names the opt-out. */
export function persistenceProblem(p: RedisPersistence): string | null {
  if (p.aof === true) return null;
  const what =
    p.aof === false
      ? `Redis does not persist: its append-only file is off (appendonly no${p.via === 'INFO' ? ', from INFO persistence' : ''}), so every order ctgate acknowledges is lost when Redis restarts`
      : `Redis persistence cannot be verified: ${p.error ?? 'no answer'}`;
  return `${what}. Turn AOF on (redis.conf: appendonly yes; or CONFIG SET appendonly yes, then CONFIG REWRITE), or set CTGATE_REDIS_REQUIRE_AOF=false to run without it (tests, development)`;
}

/** `serve` against a Redis that does not persist (CTGATE_REDIS_REQUIRE_AOF on). */
export class RedisPersistenceError extends Error {
  constructor(readonly persistence: RedisPersistence) {
    super(persistenceProblem(persistence) ?? 'Redis persists');
    this.name = 'RedisPersistenceError';
  }
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

/** The most calls one group-commit round trip carries; more go in the next. */
export const MAX_BATCH = 256;
/** An item's own failure in a group-commit batch: its call rejects with `error`, the others are unaffected. */
export class Failed {
  constructor(readonly error: unknown) {}
}

/**
 * Group commit: calls go to `run` together, as one Redis round trip instead of one each. A batch is sent when
 * the event loop has taken in the I/O at hand (setImmediate), and while one is in flight the next one fills
 * with the calls made meanwhile and leaves when it returns, so under load each round trip carries what arrived
 * during the last one. `run` returns one result per item, in order (a Failed for an item whose own command
 * failed); each call settles with its own result, or every call of the batch with the batch's error when the
 * round trip failed, as a call of its own would have.
 */
export function groupCommit<I, O>(run: (items: I[]) => Promise<(O | Failed)[]>, maxBatch = MAX_BATCH): (item: I) => Promise<O> {
  type Waiter = { item: I; resolve: (o: O) => void; reject: (e: unknown) => void };
  let open: Waiter[] = [];
  let inFlight = false;
  let scheduled = false;
  const schedule = () => {
    if (scheduled || inFlight || open.length === 0) return;
    scheduled = true;
    setImmediate(flush);
  };
  const flush = () => {
    scheduled = false;
    if (inFlight || open.length === 0) return;
    const batch = open.length > maxBatch ? open.splice(0, maxBatch) : open;
    if (batch === open) open = [];
    inFlight = true;
    let done: Promise<(O | Failed)[]>;
    try {
      done = run(batch.map((w) => w.item));
    } catch (e) {
      done = Promise.reject(e);
    }
    done
      .then(
        (out) => {
          for (let i = 0; i < batch.length; i++) {
            const w = batch[i] as Waiter;
            const r = out[i];
            if (r instanceof Failed) w.reject(r.error);
            else w.resolve(r as O);
          }
        },
        (e: unknown) => {
          for (const w of batch) w.reject(e);
        },
      )
      .finally(() => {
        inFlight = false;
        schedule();
      });
  };
  return (item) =>
    new Promise<O>((resolve, reject) => {
      open.push({ item, resolve, reject });
      schedule();
    });
}
