/**
 * OIDC bearer tokens: the access tokens (JWTs) a hospital's single sign-on (Keycloak, Entra ID, Okta) issues and
 * viewers such as OHIF send as `Authorization: Bearer <jwt>`. ctgate is a resource server here: it checks the
 * signature against the identity provider's published keys (JWKS), then iss, aud, exp/nbf/iat and, when
 * configured, a role. It runs no login flow of its own.
 *
 * Keys: fetched on first use (from CTGATE_OIDC_JWKS_URL, or the jwks_uri of the issuer's discovery document),
 * cached, fetched again when a token names a key id not in the cache (key rotation) or the cache is older than
 * ten minutes, but never more than once per 30 s (a stream of made-up key ids must not become a stream of
 * requests to the identity provider). When the keys cannot be had at all, the answer is OidcUnavailableError
 * (503: the token may be fine, ctgate cannot tell), never a 401.
 *
 * Only asymmetric algorithms on an allow-list: `none` and HS* are refused before any key is looked at (an HS256
 * token "signed" with the public key is the classic confusion attack), and the key's type, curve and declared
 * `alg` must match the token's alg.
 */
import { constants, createPublicKey, type JsonWebKey, type KeyObject, verify } from 'node:crypto';
import type { OidcConfig } from '../config/index.js';
import type { Logger } from '../observability/log.js';

/** The token is not acceptable (401 invalid_token); `reason` is fixed text, safe to send back and to log. */
export class OidcTokenError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'OidcTokenError';
  }
}

/** The token is valid but lacks the required role (403 insufficient_scope). */
export class OidcForbiddenError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'OidcForbiddenError';
  }
}

/** The identity provider's keys could not be fetched: the token cannot be checked now (503). */
export class OidcUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OidcUnavailableError';
  }
}

/** Who a verified token says the caller is. `sub` is an opaque id; `name` is the staff member's display name. */
export interface OidcIdentity {
  sub: string;
  name?: string;
  /** When the token expires (ms since the epoch). */
  expiresAt: number;
  /** Roles and groups the token carries (rolesOf): they grant permissions beyond reading results. */
  roles?: string[];
}

/** What the auth middlewares need from a verifier (a test may pass its own). */
export interface BearerTokenVerifier {
  verify(token: string): Promise<OidcIdentity>;
}

export interface OidcVerifierOptions {
  fetch?: typeof fetch;
  /** Injected for tests. */
  now?: () => number;
  /** Per request to the identity provider; default 5 s. */
  timeoutMs?: number;
  /** Least time between two key fetches; default 30 s. */
  minRefreshMs?: number;
  /** Age after which the cached keys are fetched again on the next token; default 10 min. */
  maxKeyAgeMs?: number;
  log?: Logger;
}

type Alg = 'RS256' | 'RS384' | 'PS256' | 'ES256' | 'ES384';

interface AlgSpec {
  hash: string;
  kty: 'RSA' | 'EC';
  /** node's namedCurve for EC keys. */
  curve?: string;
  /** JWS ECDSA signatures are r||s: 2 × the coordinate size. */
  sigBytes?: number;
  pss?: boolean;
}

const ALGS: Record<Alg, AlgSpec> = {
  RS256: { hash: 'sha256', kty: 'RSA' },
  RS384: { hash: 'sha384', kty: 'RSA' },
  PS256: { hash: 'sha256', kty: 'RSA', pss: true },
  ES256: { hash: 'sha256', kty: 'EC', curve: 'prime256v1', sigBytes: 64 },
  ES384: { hash: 'sha384', kty: 'EC', curve: 'secp384r1', sigBytes: 96 },
};

const isAlg = (a: unknown): a is Alg => typeof a === 'string' && Object.hasOwn(ALGS, a);

interface CachedKey {
  kid?: string;
  kty: 'RSA' | 'EC';
  alg?: string;
  key: KeyObject;
}

/** A token this long is not an access token (Entra's largest are a few KiB). */
const MAX_TOKEN_CHARS = 16 * 1024;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** A value with exactly two dots is taken for a JWT (after it failed to match the API token). */
export const looksLikeJwt = (s: string): boolean => s.split('.').length === 3;

function decodeJson(part: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new OidcTokenError(`malformed token ${what}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new OidcTokenError(`malformed token ${what}`);
  return v as Record<string, unknown>;
}

/** Role or group values from `roles`, `groups` and `realm_access.roles` (Entra, Okta, Keycloak). */
export function rolesOf(claims: Record<string, unknown>): string[] {
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : []);
  const realm = claims.realm_access;
  const realmRoles = typeof realm === 'object' && realm !== null ? (realm as Record<string, unknown>).roles : undefined;
  return [...list(claims.roles), ...list(claims.groups), ...list(realmRoles)];
}

export class OidcVerifier implements BearerTokenVerifier {
  private keys: CachedKey[] = [];
  private loadedAt = Number.NEGATIVE_INFINITY;
  private attemptedAt = Number.NEGATIVE_INFINITY;
  private lastFailure?: string;
  private inflight?: Promise<void>;
  private jwksUrl?: string;

  constructor(
    private readonly cfg: OidcConfig,
    private readonly opts: OidcVerifierOptions = {},
  ) {
    this.jwksUrl = cfg.jwksUrl;
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private async getJson(url: string, what: string): Promise<Record<string, unknown>> {
    let res: Response;
    try {
      res = await (this.opts.fetch ?? fetch)(url, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000),
      });
    } catch (e) {
      throw new OidcUnavailableError(`${what} unreachable: ${(e as Error).message}`);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new OidcUnavailableError(`${what} answered HTTP ${res.status}`);
    }
    let v: unknown;
    try {
      v = JSON.parse(await res.text());
    } catch {
      throw new OidcUnavailableError(`${what} is not JSON`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new OidcUnavailableError(`${what} is not a JSON object`);
    return v as Record<string, unknown>;
  }

  /** The JWKS URL: configured, or from the issuer's discovery document (whose issuer must be ours). */
  private async resolveJwksUrl(): Promise<string> {
    if (this.jwksUrl) return this.jwksUrl;
    const doc = await this.getJson(`${this.cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`, 'OIDC discovery document');
    if (doc.issuer !== this.cfg.issuer) throw new OidcUnavailableError('OIDC discovery document names another issuer than CTGATE_OIDC_ISSUER');
    const uri = doc.jwks_uri;
    let u: URL | undefined;
    try {
      u = typeof uri === 'string' ? new URL(uri) : undefined;
    } catch {}
    const loopback = u && (u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(u.hostname));
    if (!u || !(u.protocol === 'https:' || (u.protocol === 'http:' && loopback)))
      throw new OidcUnavailableError('OIDC discovery document has no https jwks_uri');
    this.jwksUrl = u.href;
    return this.jwksUrl;
  }

  private async load(): Promise<void> {
    const doc = await this.getJson(await this.resolveJwksUrl(), 'JWKS');
    if (!Array.isArray(doc.keys)) throw new OidcUnavailableError('JWKS has no keys array');
    const keys: CachedKey[] = [];
    for (const jwk of doc.keys as JsonWebKey[]) {
      if (typeof jwk !== 'object' || jwk === null) continue;
      // Signing keys only, and only asymmetric ones: an `oct` key is never imported.
      if (jwk.use !== undefined && jwk.use !== 'sig') continue;
      if (jwk.kty !== 'RSA' && jwk.kty !== 'EC') continue;
      try {
        const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
        keys.push({
          kid: typeof jwk.kid === 'string' ? jwk.kid : undefined,
          kty: jwk.kty,
          alg: typeof jwk.alg === 'string' ? jwk.alg : undefined,
          key: createPublicKey({ key: pub, format: 'jwk' }),
        });
      } catch {
        this.opts.log?.warn('oidc.jwks-key-skipped', { kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, reason: 'not a usable public key' });
      }
    }
    this.keys = keys;
    this.loadedAt = this.now();
    this.opts.log?.info('oidc.jwks-loaded', { keys: keys.length });
  }

  /** Fetches the keys now unless that was tried less than minRefreshMs ago; one fetch at a time. */
  private async refresh(): Promise<boolean> {
    if (this.inflight) {
      await this.inflight;
      return true;
    }
    const min = this.opts.minRefreshMs ?? 30_000;
    // While no key was ever had, a failed fetch is tried again sooner: every token waits on it.
    const gap = this.keys.length === 0 && this.lastFailure ? Math.min(min, 5000) : min;
    if (this.now() - this.attemptedAt < gap) return false;
    this.attemptedAt = this.now();
    this.inflight = this.load().then(
      () => {
        this.lastFailure = undefined;
      },
      (e: Error) => {
        this.lastFailure = e.message;
        throw e;
      },
    );
    try {
      await this.inflight;
    } finally {
      this.inflight = undefined;
    }
    return true;
  }

  private find(kid: string | undefined, spec: AlgSpec): CachedKey[] {
    return this.keys.filter((k) => k.kty === spec.kty && (kid === undefined || k.kid === kid));
  }

  /** Keys that may have signed a token with this kid, fetching the JWKS again where the cache cannot say. */
  private async candidates(kid: string | undefined, spec: AlgSpec): Promise<CachedKey[]> {
    const stale = this.now() - this.loadedAt > (this.opts.maxKeyAgeMs ?? 10 * 60_000);
    let found = this.find(kid, spec);
    if (found.length === 0 || stale) {
      try {
        await this.refresh();
      } catch (e) {
        // Stale keys still serve while the identity provider is away; no keys at all cannot.
        if (found.length === 0) throw e;
        this.opts.log?.warn('oidc.jwks-refresh-failed', { error: (e as Error).message });
      }
      found = this.find(kid, spec);
    }
    if (found.length === 0) {
      if (this.keys.length === 0 && this.lastFailure) throw new OidcUnavailableError(this.lastFailure);
      throw new OidcTokenError('unknown signing key');
    }
    return found;
  }

  async verify(token: string): Promise<OidcIdentity> {
    if (token.length > MAX_TOKEN_CHARS) throw new OidcTokenError('token too long');
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) throw new OidcTokenError('not a JWS compact token');
    const [h, p, s] = parts as [string, string, string];
    const header = decodeJson(h, 'header');
    if (!isAlg(header.alg)) throw new OidcTokenError('signature algorithm not accepted');
    if (header.crit !== undefined) throw new OidcTokenError('critical header extensions not supported');
    if (header.kid !== undefined && typeof header.kid !== 'string') throw new OidcTokenError('malformed key id');
    const alg = header.alg;
    const spec = ALGS[alg];
    const sig = Buffer.from(s, 'base64url');
    if (sig.length === 0 || (spec.sigBytes !== undefined && sig.length !== spec.sigBytes)) throw new OidcTokenError('bad signature');

    const data = Buffer.from(`${h}.${p}`);
    let ok = false;
    for (const k of await this.candidates(header.kid as string | undefined, spec)) {
      if (k.alg !== undefined && k.alg !== alg) continue;
      const d = k.key.asymmetricKeyDetails;
      if (spec.kty === 'EC' && d?.namedCurve !== spec.curve) continue;
      if (spec.kty === 'RSA' && (d?.modulusLength ?? 0) < 2048) continue;
      try {
        ok = verify(
          spec.hash,
          data,
          spec.kty === 'EC'
            ? { key: k.key, dsaEncoding: 'ieee-p1363' }
            : spec.pss
              ? { key: k.key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
              : { key: k.key, padding: constants.RSA_PKCS1_PADDING },
          sig,
        );
      } catch {
        ok = false;
      }
      if (ok) break;
    }
    if (!ok) throw new OidcTokenError('bad signature');

    const claims = decodeJson(p, 'payload');
    return this.checkClaims(claims);
  }

  private checkClaims(c: Record<string, unknown>): OidcIdentity {
    if (c.iss !== this.cfg.issuer) throw new OidcTokenError('issuer not accepted');
    const aud = c.aud;
    const auds = Array.isArray(aud) ? aud : [aud];
    if (!auds.some((a) => a === this.cfg.audience)) throw new OidcTokenError('audience not accepted');
    const now = this.now() / 1000;
    const skew = this.cfg.clockSkewS;
    const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
    if (!num(c.exp)) throw new OidcTokenError('token has no expiry');
    if ((c.exp as number) + skew <= now) throw new OidcTokenError('token expired');
    if (c.nbf !== undefined && (!num(c.nbf) || (c.nbf as number) - skew > now)) throw new OidcTokenError('token not yet valid');
    if (c.iat !== undefined && (!num(c.iat) || (c.iat as number) - skew > now)) throw new OidcTokenError('token issued in the future');
    if (typeof c.sub !== 'string' || c.sub === '') throw new OidcTokenError('token has no subject');
    if (this.cfg.requiredRole !== undefined && !rolesOf(c).includes(this.cfg.requiredRole)) throw new OidcForbiddenError('required role missing');
    const name = [c.preferred_username, c.name].find((v): v is string => typeof v === 'string' && v !== '');
    return { sub: c.sub, name, expiresAt: (c.exp as number) * 1000, roles: rolesOf(c) };
  }
}
