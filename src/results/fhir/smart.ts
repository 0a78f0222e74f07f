/**
 * SMART Backend Services (client_credentials with a signed client_assertion, SMART App Launch 2.x): ctgate signs a
 * short-lived JWT with its private key (RS384 for RSA keys, ES384 for P-384 keys), the EHR's token endpoint checks
 * it against the public key registered for the client id and returns an access token.
 */
import { createPrivateKey, type KeyObject, randomUUID, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

export interface SmartBackendOptions {
  tokenUrl: string;
  clientId: string;
  /** PEM private key (PKCS#8, PKCS#1 or SEC1). */
  privateKey: string | KeyObject;
  keyId?: string;
  scope: string;
  /** Injected for tests. */
  now?: () => number;
  fetch?: typeof fetch;
}

export class SmartAuthError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'SmartAuthError';
  }
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

export function algorithmFor(key: KeyObject): 'RS384' | 'ES384' {
  if (key.asymmetricKeyType === 'rsa') return 'RS384';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'secp384r1') return 'ES384';
  throw new SmartAuthError(
    `SMART backend services need an RSA or P-384 EC private key, got ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trim(),
  );
}

/** The client_assertion JWT: iss = sub = client id, aud = token URL, 5-minute expiry, unique jti. */
export function clientAssertion(opts: { tokenUrl: string; clientId: string; key: KeyObject; keyId?: string; nowSeconds: number }): string {
  const alg = algorithmFor(opts.key);
  const header = { alg, typ: 'JWT', ...(opts.keyId ? { kid: opts.keyId } : {}) };
  const payload = { iss: opts.clientId, sub: opts.clientId, aud: opts.tokenUrl, exp: opts.nowSeconds + 300, iat: opts.nowSeconds, jti: randomUUID() };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  // JWS wants ECDSA signatures as r||s (IEEE P1363), not DER.
  const sig = sign('sha384', Buffer.from(input), { key: opts.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

export const loadPrivateKey = (file: string): KeyObject => createPrivateKey(readFileSync(file, 'utf8'));

/** Fetches and caches access tokens; a token is reused until a minute before it expires. */
export class SmartBackendAuth {
  private readonly key: KeyObject;
  private cached?: { token: string; expiresAt: number };

  constructor(private readonly opts: SmartBackendOptions) {
    this.key = typeof opts.privateKey === 'string' ? createPrivateKey(opts.privateKey) : opts.privateKey;
    algorithmFor(this.key);
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  invalidate(): void {
    this.cached = undefined;
  }

  async token(): Promise<string> {
    if (this.cached && this.cached.expiresAt - 60_000 > this.now()) return this.cached.token;
    const assertion = clientAssertion({
      tokenUrl: this.opts.tokenUrl,
      clientId: this.opts.clientId,
      key: this.key,
      keyId: this.opts.keyId,
      nowSeconds: Math.floor(this.now() / 1000),
    });
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      scope: this.opts.scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    });
    let res: Response;
    try {
      res = await (this.opts.fetch ?? fetch)(this.opts.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      throw new SmartAuthError(`token endpoint unreachable: ${(e as Error).message}`);
    }
    const text = await res.text();
    let json: { access_token?: unknown; expires_in?: unknown; error?: unknown; error_description?: unknown } = {};
    try {
      json = JSON.parse(text);
    } catch {}
    if (!res.ok || typeof json.access_token !== 'string') {
      const why = [json.error, json.error_description].filter((s) => typeof s === 'string').join(': ') || `HTTP ${res.status}`;
      throw new SmartAuthError(`token endpoint refused client ${this.opts.clientId}: ${why}`, res.status);
    }
    const expiresIn = typeof json.expires_in === 'number' ? json.expires_in : 300;
    this.cached = { token: json.access_token, expiresAt: this.now() + expiresIn * 1000 };
    return json.access_token;
  }
}
