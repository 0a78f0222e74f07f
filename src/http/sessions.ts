/**
 * The pages' sessions, kept on the server (Redis) so that logging out ends them everywhere.
 *
 * The cookie holds a random opaque id (32 bytes, base64url); Redis holds only its SHA-256, as the key
 * `<prefix>:session:<hash>`, so a copy of Redis (a dump, a replica, a backup) opens no session. The record says
 * who logged in (`api-token`, `token:<name>`), with which permissions, when, until when, and a fingerprint of the
 * credential used (HMAC of a fixed label keyed by the token: never the token): a session whose credential is no
 * longer configured, or whose token was changed, is refused and deleted. A session ends at the first of:
 * logout, its absolute lifetime (CTGATE_SESSION_TTL_S, default 8 h), CTGATE_SESSION_IDLE_S without a request
 * (default 1 h; each request pushes the Redis key's expiry out again), or a change of the credential.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Permission } from './permissions.js';

/** Absolute session lifetime by default: one working shift. */
export const DEFAULT_SESSION_TTL_S = 8 * 3600;
/** A session unused this long ends, by default. */
export const DEFAULT_SESSION_IDLE_S = 3600;

export interface SessionRecord {
  /** Who logged in, as the audit log names the credential: `api-token`, `token:<name>`. */
  who: string;
  /** The credential's permissions at login. */
  permissions: Permission[];
  /** credentialFingerprint() of the token the session was made with. */
  fingerprint: string;
  /** ms since the epoch. */
  createdAt: number;
  /** The absolute end (ms since the epoch); the idle end is the Redis key's expiry. */
  expiresAt: number;
}

export interface SessionSettings {
  /** Absolute lifetime, seconds. */
  ttlSeconds: number;
  /** Idle lifetime, seconds (at most ttlSeconds). */
  idleSeconds: number;
  /** Secure cookie named __Host-ctgate_session (https or loopback public URL; secureCookies below). */
  secureCookie: boolean;
}

/** Where sessions live; RedisSessionStore in the gateway (any process sees every session). */
export interface SessionStore {
  readonly settings: SessionSettings;
  /** A new session; returns the id for the cookie (the store keeps only its hash). */
  create(r: Omit<SessionRecord, 'createdAt' | 'expiresAt'>, now?: number): Promise<{ id: string; record: SessionRecord }>;
  /** The live session with this id (and pushes its idle expiry out), or undefined. Throws when the store is down. */
  touch(id: string, now?: number): Promise<SessionRecord | undefined>;
  /** Ends a session (logout, or a session whose credential changed). */
  delete(id: string): Promise<void>;
}

/** What a session's fingerprint is made of: a value that changes when the token does, and does not reveal it. */
export function credentialFingerprint(token: string): string {
  return createHmac('sha256', token).update('ctgate session credential v1').digest('base64url');
}

/** Session ids: 32 random bytes, base64url (43 characters). Anything else is never looked up. */
export const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export const newSessionId = (): string => randomBytes(32).toString('base64url');

/** The Redis key part for a session id: its SHA-256 (the id itself is never stored). */
export const sessionIdHash = (id: string): string => createHash('sha256').update(id).digest('base64url');

function parseRecord(raw: string | null): SessionRecord | undefined {
  if (!raw) return undefined;
  try {
    const r = JSON.parse(raw) as Partial<SessionRecord>;
    if (typeof r.who !== 'string' || typeof r.fingerprint !== 'string' || !Array.isArray(r.permissions)) return undefined;
    if (typeof r.createdAt !== 'number' || typeof r.expiresAt !== 'number') return undefined;
    return r as SessionRecord;
  } catch {
    return undefined;
  }
}

export class RedisSessionStore implements SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly settings: SessionSettings = { ttlSeconds: DEFAULT_SESSION_TTL_S, idleSeconds: DEFAULT_SESSION_IDLE_S, secureCookie: true },
  ) {}

  private key(id: string): string {
    return `${this.prefix}:session:${sessionIdHash(id)}`;
  }

  private idleMs(r: SessionRecord, now: number): number {
    return Math.min(this.settings.idleSeconds * 1000, r.expiresAt - now);
  }

  async create(r: Omit<SessionRecord, 'createdAt' | 'expiresAt'>, now = Date.now()): Promise<{ id: string; record: SessionRecord }> {
    const record: SessionRecord = { ...r, createdAt: now, expiresAt: now + this.settings.ttlSeconds * 1000 };
    const id = newSessionId();
    await this.redis.set(this.key(id), JSON.stringify(record), 'PX', this.idleMs(record, now), 'NX');
    return { id, record };
  }

  async touch(id: string, now = Date.now()): Promise<SessionRecord | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    const key = this.key(id);
    const r = parseRecord(await this.redis.get(key));
    if (!r) return undefined;
    const left = this.idleMs(r, now);
    if (!(left > 0)) {
      await this.redis.del(key);
      return undefined;
    }
    await this.redis.pexpire(key, left);
    return r;
  }

  async delete(id: string): Promise<void> {
    if (SESSION_ID.test(id)) await this.redis.del(this.key(id));
  }
}

/** Whether the session cookie can be Secure (and so __Host-): https, or http on a loopback host. */
export function secureCookies(publicUrl: string): boolean {
  try {
    const u = new URL(publicUrl);
    return u.protocol === 'https:' || (u.protocol === 'http:' && /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i.test(u.hostname));
  } catch {
    return false;
  }
}
