import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Middleware } from 'koa';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** True when `presented` is the token; compares digests so the check takes the same time whatever is sent. */
export function tokenMatches(presented: string, token: string): boolean {
  return timingSafeEqual(digest(presented), digest(token));
}

function bearerOf(ctx: Context): string | undefined {
  const m = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
  return m?.[1]?.trim() || undefined;
}

/** Bearer-token auth; compares digests so the check takes the same time whatever the token. */
export function requireBearer(token: string): Middleware {
  const expected = digest(token);
  return async (ctx, next) => {
    const m = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
    if (!m?.[1] || !timingSafeEqual(digest(m[1].trim()), expected)) {
      ctx.set('WWW-Authenticate', 'Bearer realm="ctgate"');
      ctx.status = 401;
      ctx.body = { error: 'unauthorized', message: 'send Authorization: Bearer <CTGATE_API_TOKEN>' };
      return;
    }
    await next();
  };
}

// ---- Browser sessions -------------------------------------------------------------------------------------------
//
// A person logs in once (POST /login with the API token) and gets a session cookie: `v1.<expiry>.<nonce>.<mac>`,
// where mac = HMAC-SHA256 over the rest with a key derived from the API token. Nothing is kept on the server, so
// any gateway process accepts any session; changing the token ends every session. The cookie is HttpOnly,
// SameSite=Strict (a request from another site never carries it, which is what keeps the pages CSRF-safe; the
// only state-changing requests, login and logout, are POSTs that also check Origin), and Secure over https.

export const SESSION_COOKIE = 'ctgate_session';
/** How long a session lasts unless webPages is told otherwise (WebOptions.sessionTtlSeconds): one working shift. */
export const SESSION_TTL_SECONDS = 8 * 3600;

/** The key that signs session cookies, derived from the API token (not the token itself). */
export function sessionKey(token: string): Buffer {
  return createHmac('sha256', token).update('ctgate web session v1').digest();
}

const mac = (key: Buffer, payload: string) => createHmac('sha256', key).update(payload).digest('base64url');

/** A signed session value that expires `ttlSeconds` after `now`. */
export function signSession(key: Buffer, ttlSeconds = SESSION_TTL_SECONDS, now = Date.now()): string {
  const exp = Math.floor(now / 1000) + ttlSeconds;
  const payload = `v1.${exp.toString(36)}.${randomBytes(12).toString('base64url')}`;
  return `${payload}.${mac(key, payload)}`;
}

export type SessionCheck = { ok: true; expiresAt: number } | { ok: false; reason: 'missing' | 'malformed' | 'bad-signature' | 'expired' };

/** Checks a session value's form, signature (in constant time) and expiry. */
export function verifySession(value: string | undefined, key: Buffer, now = Date.now()): SessionCheck {
  if (!value) return { ok: false, reason: 'missing' };
  const parts = value.split('.');
  if (parts.length !== 4 || parts[0] !== 'v1' || !/^[0-9a-z]{1,12}$/.test(parts[1] ?? '') || !/^[\w-]{16}$/.test(parts[2] ?? '')) {
    return { ok: false, reason: 'malformed' };
  }
  const expected = Buffer.from(mac(key, parts.slice(0, 3).join('.')));
  const got = Buffer.from(parts[3] ?? '');
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) return { ok: false, reason: 'bad-signature' };
  const exp = Number.parseInt(parts[1] as string, 36) * 1000;
  if (!(exp > now)) return { ok: false, reason: 'expired' };
  return { ok: true, expiresAt: exp };
}

export interface CookieOptions {
  secure: boolean;
  maxAgeSeconds: number;
}

/** The Set-Cookie value for a session (an empty value with Max-Age=0 clears it). */
export function sessionCookie(value: string, o: CookieOptions): string {
  return [
    `${SESSION_COOKIE}=${value}`,
    'Path=/',
    `Max-Age=${Math.max(0, Math.floor(o.maxAgeSeconds))}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(o.secure ? ['Secure'] : []),
  ].join('; ');
}

/** Reads one cookie from the Cookie header (koa's ctx.cookies would also do; this keeps the parsing in view). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Who made the request, as requireUser sets it on ctx.state.user. */
export interface RequestUser {
  via: 'bearer' | 'session';
  /** When the session ends (ms since the epoch); absent for a bearer token. */
  expiresAt?: number;
}

export interface UserAuthOptions {
  /** Where a browser without a session is sent (with ?next=<path>); default /login. */
  loginPath?: string;
}

/** A local path to come back to after the login (paths only, no query: the pages keep no PHI in URLs anyway). */
export function safeNextPath(p: unknown): string | undefined {
  if (typeof p !== 'string' || p.length > 512) return undefined;
  return /^\/(?![/\\])[A-Za-z0-9._~\-/]*$/.test(p) && !p.includes('//') ? p : undefined;
}

/**
 * For the pages and anything a browser or a viewer loads: accepts `Authorization: Bearer <token>` or a valid
 * session cookie and sets ctx.state.user. Without either, a browser asking for a page (GET/HEAD, Accept naming text/html)
 * is redirected to the login; anything else gets 401 with WWW-Authenticate. A wrong bearer token is a 401 even
 * with a session cookie beside it.
 */
export function requireUser(token: string, opts: UserAuthOptions = {}): Middleware {
  const key = sessionKey(token);
  const loginPath = opts.loginPath ?? '/login';
  return async (ctx, next) => {
    const bearer = bearerOf(ctx);
    let user: RequestUser | undefined;
    if (bearer !== undefined) {
      if (tokenMatches(bearer, token)) user = { via: 'bearer' };
    } else {
      const s = verifySession(readCookie(ctx.get('cookie'), SESSION_COOKIE), key);
      if (s.ok) user = { via: 'session', expiresAt: s.expiresAt };
    }
    if (!user) {
      const page = bearer === undefined && (ctx.method === 'GET' || ctx.method === 'HEAD') && /\btext\/html\b/i.test(ctx.get('accept'));
      if (page) {
        const next = safeNextPath(ctx.path);
        ctx.redirect(next && next !== '/' ? `${loginPath}?next=${encodeURIComponent(next)}` : loginPath);
        ctx.set('Cache-Control', 'no-store');
        return;
      }
      ctx.set('WWW-Authenticate', 'Bearer realm="ctgate"');
      ctx.status = 401;
      ctx.body = { error: 'unauthorized', message: 'log in at /login or send Authorization: Bearer <CTGATE_API_TOKEN>' };
      return;
    }
    ctx.state.user = user;
    await next();
  };
}
