/** An in-memory SessionStore for unit tests that run without Redis (the gateway uses RedisSessionStore). */
import {
  DEFAULT_SESSION_IDLE_S,
  DEFAULT_SESSION_TTL_S,
  newSessionId,
  SESSION_ID,
  type SessionRecord,
  type SessionSettings,
  type SessionStore,
  sessionIdHash,
} from '../../src/http/sessions.js';

export class MemorySessionStore implements SessionStore {
  /** By the hash of the id, as Redis keeps them; with the idle end. */
  readonly records = new Map<string, { record: SessionRecord; idleEnd: number }>();
  /** Set to make every call fail, as a Redis that does not answer. */
  down = false;

  constructor(readonly settings: SessionSettings = { ttlSeconds: DEFAULT_SESSION_TTL_S, idleSeconds: DEFAULT_SESSION_IDLE_S, secureCookie: true }) {}

  private check(): void {
    if (this.down) throw new Error('Connection is closed.');
  }

  async create(r: Omit<SessionRecord, 'createdAt' | 'expiresAt'>, now = Date.now()): Promise<{ id: string; record: SessionRecord }> {
    this.check();
    const record: SessionRecord = { ...r, createdAt: now, expiresAt: now + this.settings.ttlSeconds * 1000 };
    const id = newSessionId();
    this.records.set(sessionIdHash(id), { record, idleEnd: Math.min(record.expiresAt, now + this.settings.idleSeconds * 1000) });
    return { id, record };
  }

  async touch(id: string, now = Date.now()): Promise<SessionRecord | undefined> {
    this.check();
    if (!SESSION_ID.test(id)) return undefined;
    const e = this.records.get(sessionIdHash(id));
    if (!e || !(e.idleEnd > now) || !(e.record.expiresAt > now)) return undefined;
    e.idleEnd = Math.min(e.record.expiresAt, now + this.settings.idleSeconds * 1000);
    return e.record;
  }

  async delete(id: string): Promise<void> {
    this.check();
    this.records.delete(sessionIdHash(id));
  }
}
