import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Middleware } from 'koa';
import type { NamedToken, Permission } from '../config/permissions.js';
import type { Logger } from '../observability/log.js';
import { type AuthFailureLimiter, refuseAndClose, tooManyFailures } from './auth-limits.js';
import { type BearerTokenVerifier, looksLikeJwt, OidcForbiddenError, type OidcIdentity, OidcTokenError, OidcUnavailableError } from './oidc.js';
import { UID_PATTERN } from './proxy/paths.js';
import { credentialFingerprint, type SessionStore } from './sessions.js';

export { secureCookies } from './sessions.js';

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
  /** What CTGATE_API_TOKEN may do; default results:read and jobs:admin. */
  apiTokenPermissions?: readonly Permission[];
  /** Further named tokens (CTGATE_API_TOKENS). */
  tokens?: readonly NamedToken[];
  oidc?: BearerTokenVerifier;
  /** OIDC roles that add permissions to an accepted access token (which may always read results). */
  oidcRoles?: Partial<Record<Permission, string>>;
  /** The pages' sessions (Redis); without it no session cookie is accepted and the login cannot make one. */
  sessions?: SessionStore;
  /** Failed authentications per client address (429 over the limit); without it, no limit. */
  failures?: AuthFailureLimiter;
  log?: Logger;
}

/** The name the audit log gives CTGATE_API_TOKEN. */
export const API_TOKEN_NAME = 'api-token';
const DEFAULT_API_TOKEN_PERMISSIONS: readonly Permission[] = ['results:read', 'jobs:admin'];

interface KnownToken {
  name: string;
  digest: Buffer;
  permissions: ReadonlySet<Permission>;
}

/** Every static token ctgate accepts, as digests: CTGATE_API_TOKEN first, then the named ones. */
function knownTokens(o: AuthOptions): KnownToken[] {
  return [
    { name: API_TOKEN_NAME, digest: digest(o.apiToken), permissions: new Set(o.apiTokenPermissions ?? DEFAULT_API_TOKEN_PERMISSIONS) },
    ...(o.tokens ?? []).map((t) => ({ name: `token:${t.name}`, digest: digest(t.token), permissions: new Set(t.permissions) })),
  ];
}

/** The static token `presented` is, compared by digest in constant time against every one (no early exit). */
function matchToken(presented: string, known: readonly KnownToken[]): KnownToken | undefined {
  const d = digest(presented);
  let found: KnownToken | undefined;
  for (const k of known) if (timingSafeEqual(d, k.digest) && !found) found = k;
  return found;
}

/** What an accepted OIDC access token may do: read results, plus whatever its roles grant. */
function oidcPermissions(id: OidcIdentity, roles: AuthOptions['oidcRoles']): ReadonlySet<Permission> {
  const out = new Set<Permission>(['results:read']);
  for (const [permission, role] of Object.entries(roles ?? {}) as [Permission, string][]) if (id.roles?.includes(role)) out.add(permission);
  return out;
}

/** The credential a login with `presented` would stand for (the API token or a named one), or undefined. */
export function staticTokenUser(presented: string, o: AuthOptions): RequestUser | undefined {
  const k = matchToken(presented, knownTokens(o));
  return k ? { via: 'bearer', who: k.name, permissions: k.permissions } : undefined;
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
async function checkBearer(presented: string, o: AuthOptions, known: readonly KnownToken[]): Promise<BearerCheck> {
  const k = matchToken(presented, known);
  if (k) return { ok: true, user: { via: 'bearer', who: k.name, permissions: k.permissions } };
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
  return {
    ok: true,
    user: { via: 'oidc', who: `oidc:${id.sub}`, permissions: oidcPermissions(id, o.oidcRoles), sub: id.sub, name: id.name, expiresAt: id.expiresAt },
  };
}

/** Answers a refused bearer token: 401/403 with WWW-Authenticate (RFC 6750), or 503 when keys are unavailable. */
function refuse(ctx: Context, r: Extract<BearerCheck, { ok: false }>, message: string): void {
  refuseAndClose(ctx);
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
 * checkBearer behind the limit on failures per client address (auth-limits.ts): an address over the limit gets
 * 429 and its token is not looked at; a token refused as unknown or invalid (401) counts one failure. Undefined
 * when the 429 was answered.
 */
async function limitedBearer(ctx: Context, presented: string, o: AuthOptions, known: readonly KnownToken[]): Promise<BearerCheck | undefined> {
  const wait = (await o.failures?.blockedFor(ctx.ip)) ?? 0;
  if (wait > 0) return void tooManyFailures(ctx, wait);
  const r = await checkBearer(presented, o, known);
  if (!r.ok && r.status === 401 && o.failures) {
    const over = await o.failures.failed(ctx.ip);
    if (over > 0) return void tooManyFailures(ctx, over);
  }
  return r;
}

/**
 * Bearer-token auth: the API token (compared by digest so the check takes the same time whatever the token) or,
 * with OIDC configured, a valid access token from the hospital's single sign-on. A string is the API token alone.
 */
export function requireBearer(auth: string | AuthOptions): Middleware {
  const o = optionsOf(auth);
  const known = knownTokens(o);
  const message = o.oidc
    ? "send Authorization: Bearer <CTGATE_API_TOKEN> or your organisation's access token"
    : 'send Authorization: Bearer <CTGATE_API_TOKEN>';
  return async (ctx, next) => {
    // Already checked by the gate in front of every router (gate.ts): a bearer check, for /api.
    if (ctx.state.user && ctx.state.user.via !== 'session') return next();
    const bearer = bearerOf(ctx);
    const r = bearer === undefined ? ({ ok: false, status: 401, description: 'no token' } as const) : await limitedBearer(ctx, bearer, o, known);
    if (!r) return; // answered 429
    if (!r.ok) return refuse(ctx, r, message);
    ctx.state.user = r.user;
    await next();
  };
}

// ---- Browser sessions -------------------------------------------------------------------------------------------
//
// A person logs in once (POST /login with a token) and gets a session cookie holding a random opaque id; the
// session itself is kept in Redis (sessions.ts: who, permissions, times, a fingerprint of the credential), so any
// gateway process accepts it, logging out ends it for good, and changing the token ends every session made with
// it. The cookie is `__Host-ctgate_session`: Secure, Path=/, no Domain (so no other host, not even a sibling
// subdomain, can set or shadow it), HttpOnly, SameSite=Strict (a request from another site never carries it, which
// is what keeps the pages CSRF-safe; the only state-changing requests, login and logout, are POSTs that also check
// Origin). Browsers keep Secure cookies on https and on http://localhost / 127.0.0.1; only where CTGATE_PUBLIC_URL
// is plain http on another host (no browser would send a Secure cookie back) is it `ctgate_session` without Secure.

/** The session cookie's name (https, or a loopback address). */
export const SESSION_COOKIE = '__Host-ctgate_session';
/** Its name where the public URL is plain http on a host other than loopback: no Secure, so no __Host- prefix. */
export const SESSION_COOKIE_INSECURE = 'ctgate_session';

export const sessionCookieName = (secure: boolean): string => (secure ? SESSION_COOKIE : SESSION_COOKIE_INSECURE);

export interface CookieOptions {
  secure: boolean;
  maxAgeSeconds: number;
}

/** The Set-Cookie value for a session (an empty value with Max-Age=0 clears it); Secure ones are __Host-. */
export function sessionCookie(value: string, o: CookieOptions): string {
  return [
    `${sessionCookieName(o.secure)}=${value}`,
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
  /** Who, for the audit log: `api-token`, `token:<name>`, `oidc:<sub>` (never a person's name). */
  who: string;
  /** What this caller may do. */
  permissions: ReadonlySet<Permission>;
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

/** The viewer opening up to 8 studies by UID, the one query a login may come back to. */
const VIEWER_NEXT = new RegExp(`^/viewer/viewer\\?StudyInstanceUIDs=${UID_PATTERN}(?:,${UID_PATTERN}){0,7}$`);

/**
 * A local path to come back to after the login (paths only, no query: the pages keep no PHI in URLs anyway), or
 * the viewer opening studies by UID (`/viewer/viewer?StudyInstanceUIDs=1.2.3,1.2.4`), the one query kept.
 */
export function safeNextPath(p: unknown): string | undefined {
  if (typeof p !== 'string' || p.length > 512) return undefined;
  if (VIEWER_NEXT.test(p)) return p;
  return /^\/(?![/\\])[A-Za-z0-9._~\-/]*$/.test(p) && !p.includes('//') ? p : undefined;
}

/** For each static token a login can use: who it is, the fingerprint sessions made with it carry, its permissions. */
function sessionCredentials(o: AuthOptions): Map<string, { fingerprint: string; permissions: ReadonlySet<Permission> }> {
  const out = new Map<string, { fingerprint: string; permissions: ReadonlySet<Permission> }>();
  for (const token of [o.apiToken, ...(o.tokens ?? []).map((t) => t.token)]) {
    const u = staticTokenUser(token, o);
    if (u) out.set(u.who, { fingerprint: credentialFingerprint(token), permissions: u.permissions });
  }
  return out;
}

type SessionUser = { ok: true; user: RequestUser } | { ok: false; revoked?: string };

/**
 * The session with this id, if it is live and the credential it was made with is still configured unchanged
 * (else it is deleted). Its permissions: those it got at login, less any the credential has lost since.
 */
async function sessionUser(
  store: SessionStore,
  id: string,
  credentials: ReadonlyMap<string, { fingerprint: string; permissions: ReadonlySet<Permission> }>,
): Promise<SessionUser> {
  const r = await store.touch(id);
  if (!r) return { ok: false };
  const now = credentials.get(r.who);
  const a = Buffer.from(r.fingerprint);
  const b = Buffer.from(now?.fingerprint ?? '');
  if (!now || a.length !== b.length || !timingSafeEqual(a, b)) {
    await store.delete(id);
    return { ok: false, revoked: r.who };
  }
  const permissions = new Set(r.permissions.filter((p) => now.permissions.has(p)));
  return { ok: true, user: { via: 'session', who: r.who, permissions, expiresAt: r.expiresAt } };
}

/**
 * For the pages and anything a browser or a viewer loads: accepts `Authorization: Bearer <token>` or the cookie of
 * a live session in the store (AuthOptions.sessions; looked up in Redis on each request) and sets ctx.state.user.
 * Wrong tokens and unknown session cookies count against the client address (AuthOptions.failures: 429 past the
 * limit, nothing checked while blocked); a Redis that does not answer is a 503. Without either, a browser asking for a page (GET/HEAD, Accept naming text/html)
 * is redirected to the login; anything else gets 401 with WWW-Authenticate. A wrong bearer token is a 401 even
 * with a session cookie beside it.
 */
export function requireUser(auth: string | AuthOptions, opts: UserAuthOptions = {}): Middleware {
  const o = optionsOf(auth);
  const known = knownTokens(o);
  const credentials = sessionCredentials(o);
  const loginPath = opts.loginPath ?? '/login';
  const message = o.oidc
    ? "log in at /login or send Authorization: Bearer <CTGATE_API_TOKEN> or your organisation's access token"
    : 'log in at /login or send Authorization: Bearer <CTGATE_API_TOKEN>';
  return async (ctx, next) => {
    if (ctx.state.user) return next(); // checked by the gate in front of every router (gate.ts)
    const bearer = bearerOf(ctx);
    let user: RequestUser | undefined;
    if (bearer !== undefined) {
      const r = await limitedBearer(ctx, bearer, o, known);
      if (!r) return; // answered 429
      if (!r.ok) return refuse(ctx, r, message);
      user = r.user;
    } else if (o.sessions) {
      const name = sessionCookieName(o.sessions.settings.secureCookie);
      const id = readCookie(ctx.get('cookie'), name);
      if (id !== undefined && id !== '') {
        const wait = (await o.failures?.blockedFor(ctx.ip)) ?? 0;
        if (wait > 0) return tooManyFailures(ctx, wait);
        let found: SessionUser;
        try {
          found = await sessionUser(o.sessions, id, credentials);
        } catch (e) {
          o.log?.warn('auth.sessions-unavailable', { error: (e as Error).message });
          refuseAndClose(ctx);
          ctx.set('Retry-After', '5');
          ctx.status = 503;
          ctx.body = { error: 'authentication unavailable', message: 'sessions cannot be checked right now (Redis is not answering); try again shortly' };
          return;
        }
        if (found.ok) user = found.user;
        else {
          if (found.revoked) o.log?.info('auth.session-revoked', { who: found.revoked });
          // The browser forgets the stale cookie, so it is counted once rather than on every request.
          ctx.append('Set-Cookie', sessionCookie('', { secure: o.sessions.settings.secureCookie, maxAgeSeconds: 0 }));
          const over = (await o.failures?.failed(ctx.ip)) ?? 0;
          if (over > 0) return tooManyFailures(ctx, over);
        }
      }
    }
    if (!user) {
      refuseAndClose(ctx);
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
