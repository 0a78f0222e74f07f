/**
 * A stand-in identity provider for tests: key pairs made with node:crypto, a discovery document and a JWKS served
 * by a real HTTP server on 127.0.0.1, and a signer for access tokens.
 */
import { constants, createHmac, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestKey {
  kid: string;
  alg: 'RS256' | 'RS384' | 'PS256' | 'ES256' | 'ES384';
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function makeKey(kid: string, alg: TestKey['alg']): TestKey {
  const pair = alg.startsWith('ES')
    ? generateKeyPairSync('ec', { namedCurve: alg === 'ES256' ? 'P-256' : 'P-384' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, alg, ...pair };
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A JWS compact token; `header` overrides the default { alg, kid, typ }. */
export function signJwt(key: TestKey, claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  const input = `${b64({ alg: key.alg, kid: key.kid, typ: 'at+jwt', ...header })}.${b64(claims)}`;
  const hash = key.alg.endsWith('384') ? 'sha384' : 'sha256';
  const sig = key.alg.startsWith('ES')
    ? sign(hash, Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
    : key.alg.startsWith('PS')
      ? sign(hash, Buffer.from(input), { key: key.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
      : sign(hash, Buffer.from(input), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

/** An HS256 token whose HMAC secret is the given bytes (the algorithm-confusion attack uses the public key). */
export function signHs256(secret: Buffer | string, claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  const input = `${b64({ alg: 'HS256', typ: 'JWT', ...header })}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

export interface TestIdp {
  issuer: string;
  jwksUrl: string;
  /** Keys published in the JWKS (change it to rotate). */
  keys: TestKey[];
  /** Requests seen per path. */
  hits: Record<string, number>;
  /** While true, every request gets a 500. */
  down: boolean;
  claims(extra?: Record<string, unknown>): Record<string, unknown>;
  close(): Promise<void>;
}

export const AUDIENCE = 'ctgate-test';

export async function startIdp(keys: TestKey[]): Promise<TestIdp> {
  const idp = { keys, hits: {} as Record<string, number>, down: false } as TestIdp;
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    idp.hits[path] = (idp.hits[path] ?? 0) + 1;
    if (idp.down) {
      res.writeHead(500).end('down');
      return;
    }
    const json = (v: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v));
    if (path === '/realms/test/.well-known/openid-configuration') return json({ issuer: idp.issuer, jwks_uri: idp.jwksUrl });
    if (path === '/realms/test/certs') {
      return json({ keys: idp.keys.map((k) => ({ ...k.publicKey.export({ format: 'jwk' }), kid: k.kid, alg: k.alg, use: 'sig' })) });
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  idp.issuer = `http://127.0.0.1:${port}/realms/test`;
  idp.jwksUrl = `${idp.issuer}/certs`;
  idp.claims = (extra = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return {
      iss: idp.issuer,
      aud: AUDIENCE,
      sub: 'f3b0c0de-0000-4000-8000-000000000001',
      exp: now + 300,
      iat: now,
      nbf: now,
      preferred_username: 'rad1',
      ...extra,
    };
  };
  idp.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return idp;
}
