import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Middleware } from 'koa';
import type { Logger } from '../observability/log.js';
import { type BearerTokenVerifier, looksLikeJwt, OidcForbiddenError, type OidcIdentity, OidcTokenError, OidcUnavailableError } from './oidc.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** True when `presented` is the token; compares digests so the check takes the same time whatever is sent. */
export function tokenMatches(presented: string, token: string): boolean {
  return timingSafeEqual(digest(presented), digest(token));
}

function bearerOf(ctx: Context): string | undefined {
  const m = /^Bearer\s+(.+)$/i.exec(ctx.get('authorization'));
  return m?.[1]?.trim() || undefined;
}

/**
 * What the auth middlewares need, built once per app (createApp) from the configuration: the API token and, when
 * CTGATE_OIDC_ISSUER is set, the verifier for the single sign-on's access tokens (its key cache is shared by
 * every route).
 */
export interface AuthOptions {
  apiToken: string;
  oidc?: BearerTokenVerifier;
  log?: Logger;
}

/** The auth a router uses: the one createApp built, or the API token alone where a test mounts a router by itself. */
export const authOf = (deps: { auth?: AuthOptions; apiToken: string; log?: Logger }): AuthOptions => deps.auth ?? { apiToken: deps.apiToken, log: deps.log };

const optionsOf = (o: string | AuthOptions): AuthOptions => (typeof o === 'string' ? { apiToken: o } : o);

type BearerCheck =
  | { ok: true; user: RequestUser }
  | { ok: false; status: 401 | 403 | 503; error?: 'invalid_token' | 'insufficient_scope'; description: string };

/**
 * The API token (compared by digest, in constant time) or, with OIDC on, a JWT (a value with two dots) that the
 * verifier accepts. Nothing from the token reaches a log line but the subject, and that at debug.
 */
async function checkBearer(presented: string, o: AuthOptions, expected: Buffer): Promise<BearerCheck> {
  if (timingSafeEqual(digest(presented), expected)) return { ok: true, user: { via: 'bearer' } };
  if (!o.oidc || !looksLikeJwt(presented)) return { ok: false, status: 401, description: 'unknown token' };
  let id: OidcIdentity;
  try {
    id = await o.oidc.verify(presented);
  } catch (e) {
    if (e instanceof OidcTokenError) {
      o.log?.info('auth.oidc-refused', { reason: e.reason });
      return { ok: false, status: 401, error: 'invalid_token', description: e.reason };
    }
    if (e instanceof OidcForbiddenError) {
      o.log?.info('auth.oidc-refused', { reason: e.reason });
      return { ok: false, status: 403, error: 'insufficient_scope', description: e.reason };
    }
    if (e instanceof OidcUnavailableError) {
      o.log?.warn('auth.oidc-unavailable', { error: e.message });
      return { ok: false, status: 503, description: "the identity provider's signing keys cannot be fetched; try again shortly" };
    }
    throw e;
  }
  o.log?.debug('auth.oidc-accepted', { sub: id.sub });
  return { ok: true, user: { via: 'oidc', sub: id.sub, name: id.name, expiresAt: id.expiresAt } };
}

/** Answers a refused bearer token: 401/403 with WWW-Authenticate (RFC 6750), or 503 when keys are unavailable. */
function refuse(ctx: Context, r: Extract<BearerCheck, { ok: false }>, message: string): void {
  if (r.status === 503) {
    ctx.set('Retry-After', '30');
    ctx.status = 503;
    ctx.body = { error: 'authentication unavailable', message: r.description };
    return;
  }
  ctx.set('WWW-Authenticate', r.error ? `Bearer realm="ctgate", error="${r.error}", error_description="${r.description}"` : 'Bearer realm="ctgate"');
  ctx.status = r.status;
  ctx.body = r.status === 403 ? { error: 'forbidden', message: r.description } : { error: 'unauthorized', message: r.error ? r.description : message };
}

/**
 * Bearer-token auth: the API token (compared by digest so the check takes the same time whatever the token) or,
 * with OIDC configured, a valid access token from the hospital's single sign-on. A string is the API token alone.
 */
export function requireBearer(auth: string | AuthOptions): Middleware {
  const o = optionsOf(auth);
  const expected = digest(o.apiToken);
  const message = o.oidc
    ? "send Authorization: Bearer <CTGATE_API_TOKEN> or your organisation's access token"
    : 'send Authorization: Bearer <CTGATE_API_TOKEN>';
  return async (ctx, next) => {
    const bearer = bearerOf(ctx);
    const r: BearerCheck = bearer === undefined ? { ok: false, status: 401, description: 'no token' } : await checkBearer(bearer, o, expected);
    if (!r.ok) return refuse(ctx, r, message);
    ctx.state.user = r.user;
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
  /** bearer: the API token; session: the pages' cookie; oidc: an access token from the single sign-on. */
  via: 'bearer' | 'session' | 'oidc';
  /** When the session or access token ends (ms since the epoch); absent for the API token. */
  expiresAt?: number;
  /** The access token's subject (an opaque id from the identity provider); oidc only. */
  sub?: string;
  /** The staff member's user or display name from the access token; oidc only. Not for logs. */
  name?: string;
}

export interface UserAuthOptions {
  /** Where a browser without a session is sent (with ?next=<path>); default /login. */
  loginPath?: string;
}

/**
 * A local path to come back to after the login (paths only, no query: the pages keep no PHI in URLs anyway), or
 * the viewer opening studies by UID (`/viewer/viewer?StudyInstanceUIDs=1.2.3,1.2.4`), the one query kept.
 */
export function safeNextPath(p: unknown): string | undefined {
  if (typeof p !== 'string' || p.length > 512) return undefined;
  if (/^\/viewer\/viewer\?StudyInstanceUIDs=[0-9.]{1,64}(?:,[0-9.]{1,64}){0,7}$/.test(p)) return p;
  return /^\/(?![/\\])[A-Za-z0-9._~\-/]*$/.test(p) && !p.includes('//') ? p : undefined;
}

/**
 * For the pages and anything a browser or a viewer loads: accepts `Authorization: Bearer <token>` or a valid
 * session cookie and sets ctx.state.user. Without either, a browser asking for a page (GET/HEAD, Accept naming text/html)
 * is redirected to the login; anything else gets 401 with WWW-Authenticate. A wrong bearer token is a 401 even
 * with a session cookie beside it.
 */
export function requireUser(auth: string | AuthOptions, opts: UserAuthOptions = {}): Middleware {
  const o = optionsOf(auth);
  const key = sessionKey(o.apiToken);
  const expected = digest(o.apiToken);
  const loginPath = opts.loginPath ?? '/login';
  const message = o.oidc
    ? "log in at /login or send Authorization: Bearer <CTGATE_API_TOKEN> or your organisation's access token"
    : 'log in at /login or send Authorization: Bearer <CTGATE_API_TOKEN>';
  return async (ctx, next) => {
    const bearer = bearerOf(ctx);
    let user: RequestUser | undefined;
    if (bearer !== undefined) {
      const r = await checkBearer(bearer, o, expected);
      if (!r.ok) return refuse(ctx, r, message);
      user = r.user;
    } else {
      const s = verifySession(readCookie(ctx.get('cookie'), SESSION_COOKIE), key);
      if (s.ok) user = { via: 'session', expiresAt: s.expiresAt };
    }
    if (!user) {
      const page = (ctx.method === 'GET' || ctx.method === 'HEAD') && /\btext\/html\b/i.test(ctx.get('accept'));
      if (page) {
        const next = safeNextPath(ctx.path + ctx.search) ?? safeNextPath(ctx.path);
        ctx.redirect(next && next !== '/' ? `${loginPath}?next=${encodeURIComponent(next)}` : loginPath);
        ctx.set('Cache-Control', 'no-store');
        return;
      }
      return refuse(ctx, { ok: false, status: 401, description: 'no token' }, message);
    }
    ctx.state.user = user;
    await next();
  };
}
