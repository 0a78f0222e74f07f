/** OIDC bearer tokens: signature, algorithm and claim checks, JWKS discovery, rotation and outages, and the config. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import request from 'supertest';
import { ConfigError, loadConfig, type OidcConfig } from '../../src/config/index.js';
import { requireBearer, requireUser, SESSION_COOKIE } from '../../src/http/auth.js';
import { OidcForbiddenError, OidcTokenError, OidcUnavailableError, OidcVerifier, rolesOf } from '../../src/http/oidc.js';
import { credentialFingerprint } from '../../src/http/sessions.js';
import { AUDIENCE, makeKey, signHs256, signJwt, startIdp, type TestIdp } from '../helpers/oidc.js';
import { MemorySessionStore } from '../helpers/sessions.js';

const rsa = makeKey('rsa-1', 'RS256');
const ec = makeKey('ec-1', 'ES256');

const rejects = (p: Promise<unknown>, reason: string | RegExp, kind: new (...a: never[]) => Error = OidcTokenError) =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof kind, `expected ${kind.name}, got ${String(e)}`);
    if (typeof reason === 'string') assert.equal((e as Error).message, reason);
    else assert.match((e as Error).message, reason);
    return true;
  });

describe('oidc: verifier', () => {
  let idp: TestIdp;
  let cfg: OidcConfig;
  before(async () => {
    idp = await startIdp([rsa, ec]);
    cfg = { issuer: idp.issuer, audience: AUDIENCE, clockSkewS: 60 };
  });
  after(() => idp.close());

  it('accepts valid RS256, ES256, RS384, ES384 and PS256 tokens; finds the keys through discovery', async () => {
    const v = new OidcVerifier(cfg);
    const id = await v.verify(signJwt(rsa, idp.claims()));
    assert.equal(id.sub, 'f3b0c0de-0000-4000-8000-000000000001');
    assert.equal(id.name, 'rad1');
    assert.equal((await v.verify(signJwt(ec, idp.claims({ aud: ['account', AUDIENCE] })))).sub, id.sub);
    assert.equal(idp.hits['/realms/test/.well-known/openid-configuration'], 1);
    const more = [makeKey('rsa-384', 'RS384'), makeKey('ec-384', 'ES384'), makeKey('pss-1', 'PS256')];
    const idp2 = await startIdp(more);
    try {
      const v2 = new OidcVerifier({ issuer: idp2.issuer, audience: AUDIENCE, jwksUrl: idp2.jwksUrl, clockSkewS: 60 });
      for (const k of more) assert.equal((await v2.verify(signJwt(k, idp2.claims()))).name, 'rad1', k.alg);
      assert.equal(idp2.hits['/realms/test/.well-known/openid-configuration'], undefined, 'configured JWKS URL: no discovery');
      assert.equal(idp2.hits['/realms/test/certs'], 1, 'keys cached');
    } finally {
      await idp2.close();
    }
  });

  it('refuses a wrong issuer or audience, an expired, not yet valid or future-issued token (with skew)', async () => {
    const v = new OidcVerifier(cfg);
    const now = Math.floor(Date.now() / 1000);
    await rejects(v.verify(signJwt(rsa, idp.claims({ iss: 'https://evil.example/realms/test' }))), 'issuer not accepted');
    await rejects(v.verify(signJwt(rsa, idp.claims({ iss: `${idp.issuer}/` }))), 'issuer not accepted');
    await rejects(v.verify(signJwt(rsa, idp.claims({ aud: 'someone-else' }))), 'audience not accepted');
    await rejects(v.verify(signJwt(rsa, idp.claims({ aud: ['a', 'b'] }))), 'audience not accepted');
    await rejects(v.verify(signJwt(rsa, idp.claims({ exp: now - 61 }))), 'token expired');
    await rejects(v.verify(signJwt(rsa, idp.claims({ exp: undefined }))), 'token has no expiry');
    await rejects(v.verify(signJwt(rsa, idp.claims({ nbf: now + 120 }))), 'token not yet valid');
    await rejects(v.verify(signJwt(rsa, idp.claims({ iat: now + 120 }))), 'token issued in the future');
    await rejects(v.verify(signJwt(rsa, idp.claims({ sub: undefined }))), 'token has no subject');
    // Within the skew: accepted.
    await v.verify(signJwt(rsa, idp.claims({ exp: now - 30, nbf: now + 30 })));
  });

  it('refuses alg none, HS256 keyed with the public key, alg/key mismatches and a tampered payload', async () => {
    const v = new OidcVerifier(cfg);
    const claims = idp.claims();
    const good = signJwt(rsa, claims);
    const [h, , s] = good.split('.') as [string, string, string];
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    await rejects(v.verify(`${b64({ alg: 'none', kid: rsa.kid })}.${b64(claims)}.`), 'signature algorithm not accepted');
    await rejects(v.verify(`${b64({ alg: 'none' })}.${b64(claims)}.${s}`), 'signature algorithm not accepted');
    // The classic confusion: HMAC keyed with the published public key (PEM and JWK forms).
    const pem = rsa.publicKey.export({ format: 'pem', type: 'spki' });
    await rejects(v.verify(signHs256(pem, claims, { kid: rsa.kid })), 'signature algorithm not accepted');
    await rejects(v.verify(signHs256(JSON.stringify(rsa.publicKey.export({ format: 'jwk' })), claims, { kid: rsa.kid })), 'signature algorithm not accepted');
    // An RSA signature under an EC alg and the reverse; an RS256 key claiming PS256.
    await rejects(v.verify(`${b64({ alg: 'ES256', kid: rsa.kid })}.${good.split('.')[1]}.${s}`), 'bad signature');
    const ecTok = signJwt(ec, claims);
    await rejects(v.verify(`${b64({ alg: 'RS256', kid: ec.kid })}.${ecTok.split('.')[1]}.${ecTok.split('.')[2]}`), /unknown signing key|bad signature/);
    await rejects(v.verify(`${b64({ alg: 'PS256', kid: rsa.kid })}.${good.split('.')[1]}.${s}`), 'bad signature');
    // Tampered payload, same signature.
    await rejects(v.verify(`${h}.${b64({ ...claims, sub: 'admin' })}.${s}`), 'bad signature');
    // Malformed shapes.
    await rejects(v.verify('a.b'), 'not a JWS compact token');
    await rejects(v.verify(`${h}.${b64(claims)}.${s}=`), 'not a JWS compact token');
    await rejects(v.verify(`${b64({ alg: 'RS256', kid: rsa.kid, crit: ['exp'] })}.${b64(claims)}.${s}`), 'critical header extensions not supported');
    await rejects(v.verify(`${b64([1])}.${b64(claims)}.${s}`), 'malformed token header');
  });

  it('fetches the JWKS again for an unknown kid (rotation), at most once per interval', async () => {
    let t = Date.now();
    const v = new OidcVerifier(cfg, { now: () => t });
    await v.verify(signJwt(rsa, idp.claims()));
    const fetches = () => idp.hits['/realms/test/certs'] ?? 0;
    const before = fetches();
    const rotated = makeKey('rsa-2', 'RS256');
    const stranger = makeKey('rsa-9', 'RS256');
    // Right after the first fetch: an unknown kid does not fetch again.
    await rejects(v.verify(signJwt(stranger, idp.claims())), 'unknown signing key');
    assert.equal(fetches(), before);
    t += 31_000;
    // Not yet published: one refresh, then refused.
    await rejects(v.verify(signJwt(stranger, idp.claims())), 'unknown signing key');
    assert.equal(fetches(), before + 1);
    idp.keys = [rotated, ec];
    // Within 30 s of the last fetch: no new request, still unknown.
    await rejects(v.verify(signJwt(rotated, idp.claims())), 'unknown signing key');
    assert.equal(fetches(), before + 1);
    t += 31_000;
    const id = await v.verify(signJwt(rotated, idp.claims()));
    assert.equal(id.name, 'rad1');
    assert.equal(fetches(), before + 2);
    // The old key is gone from the JWKS and so from the cache.
    await rejects(v.verify(signJwt(rsa, idp.claims())), 'unknown signing key');
    idp.keys = [rsa, ec];
  });

  it('requires the configured role from roles, groups or realm_access.roles', async () => {
    const v = new OidcVerifier({ ...cfg, requiredRole: 'ctgate-reader' });
    await rejects(v.verify(signJwt(rsa, idp.claims())), 'required role missing', OidcForbiddenError);
    await rejects(v.verify(signJwt(rsa, idp.claims({ roles: ['other'] }))), 'required role missing', OidcForbiddenError);
    await v.verify(signJwt(rsa, idp.claims({ roles: ['ctgate-reader'] })));
    await v.verify(signJwt(rsa, idp.claims({ groups: ['x', 'ctgate-reader'] })));
    await v.verify(signJwt(ec, idp.claims({ realm_access: { roles: ['ctgate-reader'] } })));
    assert.deepEqual(rolesOf({ roles: 'a', groups: ['b', 3], realm_access: { roles: ['c'] } }), ['a', 'b', 'c']);
  });

  it('answers 503-class OidcUnavailableError when the JWKS or discovery cannot be fetched', async () => {
    const down = await startIdp([rsa]);
    down.down = true;
    const v = new OidcVerifier({ issuer: down.issuer, audience: AUDIENCE, clockSkewS: 60 }, { timeoutMs: 1000 });
    const tok = signJwt(rsa, down.claims());
    await rejects(v.verify(tok), /discovery document answered HTTP 500/, OidcUnavailableError);
    // Nothing listens there any more.
    await down.close();
    const gone = new OidcVerifier({ issuer: down.issuer, audience: AUDIENCE, jwksUrl: down.jwksUrl, clockSkewS: 60 }, { timeoutMs: 1000 });
    await rejects(gone.verify(tok), /JWKS unreachable/, OidcUnavailableError);
    // Still unavailable (not "unknown key") while the retry waits.
    await rejects(gone.verify(tok), /JWKS unreachable/, OidcUnavailableError);
  });

  it('keeps serving cached keys when a later refresh fails', async () => {
    let t = Date.now();
    const v = new OidcVerifier(cfg, { now: () => t });
    await v.verify(signJwt(rsa, idp.claims()));
    idp.down = true;
    try {
      t += 11 * 60_000;
      const claims = idp.claims({ exp: Math.floor(t / 1000) + 300, iat: Math.floor(t / 1000), nbf: undefined });
      assert.equal((await v.verify(signJwt(rsa, claims))).name, 'rad1');
    } finally {
      idp.down = false;
    }
  });
});

describe('oidc: config', () => {
  const base = { CTGATE_OIDC_ISSUER: 'https://sso.example.org/realms/hospital' };
  it('is off by default and reads every key', () => {
    assert.equal(loadConfig({}).oidc, undefined);
    const c = loadConfig({
      ...base,
      CTGATE_OIDC_AUDIENCE: 'ctgate',
      CTGATE_OIDC_JWKS_URL: 'https://sso.example.org/certs',
      CTGATE_OIDC_REQUIRED_ROLE: 'ctgate-user',
      CTGATE_OIDC_CLOCK_SKEW_S: '30',
    });
    assert.deepEqual(c.oidc, {
      issuer: 'https://sso.example.org/realms/hospital',
      audience: 'ctgate',
      jwksUrl: 'https://sso.example.org/certs',
      requiredRole: 'ctgate-user',
      clockSkewS: 30,
    });
    assert.equal(loadConfig({ CTGATE_OIDC_ISSUER: 'https://login.example.com/', CTGATE_OIDC_AUDIENCE: 'a' }).oidc?.issuer, 'https://login.example.com/');
    assert.equal(loadConfig({ ...base, CTGATE_OIDC_AUDIENCE: 'a' }).oidc?.clockSkewS, 60);
  });

  it('names the key at fault', () => {
    const throwsKey = (env: Record<string, string>, key: RegExp) =>
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && key.test(e.message),
      );
    throwsKey(base, /^CTGATE_OIDC_AUDIENCE: expected/);
    throwsKey({ CTGATE_OIDC_ISSUER: 'http://sso.example.org/realms/x', CTGATE_OIDC_AUDIENCE: 'a' }, /^CTGATE_OIDC_ISSUER: expected an https URL/);
    throwsKey({ CTGATE_OIDC_AUDIENCE: 'a' }, /^CTGATE_OIDC_ISSUER: expected/);
    throwsKey({ ...base, CTGATE_OIDC_AUDIENCE: 'a', CTGATE_OIDC_JWKS_URL: 'ftp://x/' }, /^CTGATE_OIDC_JWKS_URL/);
    throwsKey({ ...base, CTGATE_OIDC_AUDIENCE: 'a', CTGATE_OIDC_CLOCK_SKEW_S: '-1' }, /^CTGATE_OIDC_CLOCK_SKEW_S/);
    assert.equal(
      loadConfig({ CTGATE_OIDC_ISSUER: 'http://127.0.0.1:8081/realms/x', CTGATE_OIDC_AUDIENCE: 'a' }).oidc?.issuer,
      'http://127.0.0.1:8081/realms/x',
    );
  });
});

describe('oidc: requireBearer / requireUser', () => {
  const TOKEN = 'oidc-mw-token-0123456789';
  let idp: TestIdp;
  before(async () => {
    idp = await startIdp([rsa]);
  });
  after(() => idp.close());

  const sessions = new MemorySessionStore();
  const app = (verifier: OidcVerifier) => {
    const a = new Koa();
    const auth = { apiToken: TOKEN, oidc: verifier, sessions };
    a.use(async (ctx, next) => (ctx.path.startsWith('/api') ? requireBearer(auth)(ctx, next) : requireUser(auth)(ctx, next)));
    a.use((ctx) => {
      ctx.body = { user: ctx.state.user };
    });
    return a.callback();
  };

  it('sets the user from a valid token; a non-JWT wrong token is the plain 401; a session still works', async () => {
    const h = app(new OidcVerifier({ issuer: idp.issuer, audience: AUDIENCE, clockSkewS: 60 }));
    const r = await request(h)
      .get('/api/jobs')
      .set('Authorization', `Bearer ${signJwt(rsa, idp.claims())}`)
      .expect(200);
    assert.equal(r.body.user.via, 'oidc');
    assert.equal(r.body.user.sub, 'f3b0c0de-0000-4000-8000-000000000001');
    const plain = await request(h).get('/api/jobs').set('Authorization', 'Bearer not-a-jwt-0123456789').expect(401);
    assert.equal(plain.headers['www-authenticate'], 'Bearer realm="ctgate"');
    const bad = await request(h).get('/jobs').set('Authorization', 'Bearer a.b.c').expect(401);
    assert.match(bad.headers['www-authenticate'] ?? '', /^Bearer realm="ctgate", error="invalid_token", error_description="/);
    await request(h)
      .get('/jobs')
      .set(
        'Cookie',
        `${SESSION_COOKIE}=${(await sessions.create({ who: 'api-token', permissions: ['results:read'], fingerprint: credentialFingerprint(TOKEN) })).id}`,
      )
      .expect(200);
    assert.deepEqual((await request(h).get('/api/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200)).body, {
      user: { via: 'bearer', who: 'api-token', permissions: {} },
    });
  });

  it('answers 503 with Retry-After, not 401, when the keys cannot be fetched', async () => {
    const down = await startIdp([rsa]);
    down.down = true;
    try {
      const h = app(new OidcVerifier({ issuer: down.issuer, audience: AUDIENCE, clockSkewS: 60 }, { timeoutMs: 1000 }));
      const tok = signJwt(rsa, down.claims());
      for (const path of ['/api/jobs', '/jobs']) {
        const r = await request(h).get(path).set('Authorization', `Bearer ${tok}`).expect(503);
        assert.equal(r.headers['retry-after'], '30');
        assert.equal(r.headers['www-authenticate'], undefined);
      }
      // The API token does not depend on the identity provider.
      await request(h).get('/api/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200);
    } finally {
      await down.close();
    }
  });
});
