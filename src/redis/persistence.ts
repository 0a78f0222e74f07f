import type { Redis } from 'ioredis';

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
