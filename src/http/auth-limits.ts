/**
 * Limits on failed authentication per client address, and closing refused requests' connections.
 *
 * Every wrong login, wrong bearer token and unknown session cookie counts against the client's address (an IPv6
 * address by its /64); CTGATE_AUTH_FAIL_LIMIT failures within CTGATE_AUTH_FAIL_WINDOW_S block it for one window:
 * 429 with Retry-After, and no credential is looked at while it lasts (so guessing cannot go on). Successes
 * count nothing; requests without any credential count nothing. The counts live in Redis (rate-limiter-flexible,
 * RateLimiterRedis), so every gateway process shares them. While Redis is down each process counts in memory
 * with the same limits (rate-limiter-flexible's insurance limiter): the limit still holds per process.
 *
 * The address is the TCP peer's unless CTGATE_TRUST_PROXY is on (Koa's app.proxy: the last X-Forwarded-For hop,
 * what the proxy in front saw); without a proxy that header is anyone's to forge.
 */
import type { Redis } from 'ioredis';
import type { Context } from 'koa';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../config/index.js';
import type { Logger } from '../observability/log.js';
import { DEFAULT_SESSION_IDLE_S, DEFAULT_SESSION_TTL_S, RedisSessionStore, type SessionStore, secureCookies } from './sessions.js';

export const DEFAULT_AUTH_FAIL_LIMIT = 20;
export const DEFAULT_AUTH_FAIL_WINDOW_S = 300;

export interface AuthFailLimits {
  /** Failures allowed per address within the window; the next one is answered 429. */
  limit: number;
  windowSeconds: number;
}

/** The key an address is counted under: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64). */
export function clientKey(ip: string): string {
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (v4) return v4[1] as string;
  if (!ip.includes(':')) return ip || 'unknown';
  const [head = '', tail = ''] = ip.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

export class AuthFailureLimiter {
  private readonly limiter: RateLimiterRedis | RateLimiterMemory;

  constructor(
    readonly limits: AuthFailLimits = { limit: DEFAULT_AUTH_FAIL_LIMIT, windowSeconds: DEFAULT_AUTH_FAIL_WINDOW_S },
    redis?: { client: Redis; prefix: string },
    private readonly log?: Logger,
  ) {
    const opts = { points: limits.limit, duration: limits.windowSeconds, blockDuration: limits.windowSeconds };
    this.limiter = redis
      ? new RateLimiterRedis({
          ...opts,
          storeClient: redis.client,
          keyPrefix: `${redis.prefix}:auth-fail`,
          // Redis not connected: straight to the per-process counts instead of waiting for a timeout.
          rejectIfRedisNotReady: true,
          insuranceLimiter: new RateLimiterMemory({ ...opts, keyPrefix: 'auth-fail' }),
        })
      : new RateLimiterMemory({ ...opts, keyPrefix: 'auth-fail' });
  }

  /** Seconds until this address may try again, or 0 when it may now. Never throws (a store error: 0). */
  async blockedFor(ip: string): Promise<number> {
    try {
      const r = await this.limiter.get(clientKey(ip));
      return r && r.consumedPoints > this.limits.limit ? retryAfter(r) : 0;
    } catch (e) {
      this.log?.warn('auth.limit-unavailable', { error: (e as Error).message });
      return 0;
    }
  }

  /** Counts a failure; returns the seconds to wait when this one went over the limit, else 0. */
  async failed(ip: string): Promise<number> {
    try {
      await this.limiter.consume(clientKey(ip));
      return 0;
    } catch (e) {
      if (e instanceof RateLimiterRes) {
        if (e.consumedPoints === this.limits.limit + 1) this.log?.warn('auth.locked-out', { ip: clientKey(ip), seconds: retryAfter(e) });
        return retryAfter(e);
      }
      this.log?.warn('auth.limit-unavailable', { error: (e as Error).message });
      return 0;
    }
  }
}

const retryAfter = (r: RateLimiterRes) => Math.max(1, Math.ceil(r.msBeforeNext / 1000));

/** Whether the request still has body bytes on the wire that nobody has read. */
function bodyUnread(ctx: Context): boolean {
  const req = ctx.req;
  if (req.complete || req.readableEnded) return false;
  const length = Number(req.headers['content-length'] ?? 0);
  return length > 0 || req.headers['transfer-encoding'] !== undefined;
}

/**
 * For a request refused before its body was read (401, 403, 413, 429): answer with `Connection: close`, so Node
 * closes the connection once the answer is written instead of reading (and waiting for) the rest of the body to
 * keep the connection alive. A client that trickles a huge body after being refused is cut off at once. A
 * request without a body keeps its connection.
 */
export function refuseAndClose(ctx: Context): void {
  if (!bodyUnread(ctx)) return;
  ctx.set('Connection', 'close');
  // Node ends the socket itself after a `Connection: close` answer; make sure, should anything keep it open.
  const socket = ctx.req.socket;
  ctx.res.once('finish', () => {
    const t = setTimeout(() => socket.destroy(), 1000);
    t.unref();
    socket.once('close', () => clearTimeout(t));
  });
}

/** 429 for an address over the failure limit: Retry-After, and the connection closed if a body is pending. */
export function tooManyFailures(ctx: Context, seconds: number): void {
  refuseAndClose(ctx);
  ctx.set('Retry-After', String(seconds));
  ctx.set('Cache-Control', 'no-store');
  ctx.status = 429;
  ctx.body = { error: 'too many failed attempts', message: `too many failed sign-ins from this address; try again in ${seconds} s` };
}

/**
 * The stores behind the sign-in: the sessions and the failure counts, both in the gateway's Redis under its
 * prefix, with the limits from the configuration (defaults where a test's partial configuration lacks them).
 */
export function authStores(
  config: Pick<Config, 'publicUrl' | 'redisPrefix'> & Partial<Pick<Config, 'sessions' | 'authFailures'>>,
  redis: Redis,
  log?: Logger,
): { sessions: SessionStore; failures: AuthFailureLimiter } {
  const prefix = config.redisPrefix ?? 'ctgate';
  const sessions = new RedisSessionStore(redis, prefix, {
    ttlSeconds: config.sessions?.ttlSeconds ?? DEFAULT_SESSION_TTL_S,
    idleSeconds: config.sessions?.idleSeconds ?? DEFAULT_SESSION_IDLE_S,
    secureCookie: secureCookies(config.publicUrl),
  });
  const failures = new AuthFailureLimiter(
    { limit: config.authFailures?.limit ?? DEFAULT_AUTH_FAIL_LIMIT, windowSeconds: config.authFailures?.windowSeconds ?? DEFAULT_AUTH_FAIL_WINDOW_S },
    { client: redis, prefix },
    log,
  );
  return { sessions, failures };
}
