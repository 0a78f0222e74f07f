/** Sessions for the pages: signed cookies (expiry, tampering, another key), and requireUser (bearer or cookie). */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import request from 'supertest';
import {
  readCookie,
  requireBearer,
  requireUser,
  SESSION_COOKIE,
  safeNextPath,
  sessionCookie,
  sessionKey,
  signSession,
  verifySession,
} from '../../src/http/auth.js';

const TOKEN = 'web-auth-token-0123456789';
const key = sessionKey(TOKEN);

describe('web: session cookie', () => {
  it('accepts its own session until it expires', () => {
    const now = Date.UTC(2026, 10, 27, 10);
    const s = signSession(key, 3600, now);
    assert.match(s, /^v1\.[0-9a-z]+\.[\w-]{16}\.[\w-]{43}$/);
    assert.deepEqual(verifySession(s, key, now + 1000), { ok: true, expiresAt: now + 3600_000 });
    assert.deepEqual(verifySession(s, key, now + 3600_000), { ok: false, reason: 'expired' });
  });

  it('two sessions differ (a nonce), and the key is not the token', () => {
    assert.notEqual(signSession(key), signSession(key));
    assert.ok(!key.toString('utf8').includes(TOKEN));
    assert.notDeepEqual(sessionKey(TOKEN), sessionKey(`${TOKEN}x`));
  });

  it('refuses a tampered expiry, nonce or signature, another key, and malformed values', () => {
    const now = Date.now();
    const s = signSession(key, 60, now);
    const [v, exp, nonce, mac] = s.split('.') as [string, string, string, string];
    const later = (Number.parseInt(exp, 36) + 86_400).toString(36);
    assert.equal(verifySession([v, later, nonce, mac].join('.'), key, now).ok, false, 'extended expiry');
    assert.deepEqual(verifySession([v, later, nonce, mac].join('.'), key, now), { ok: false, reason: 'bad-signature' });
    const otherNonce = `${nonce.slice(0, -1)}${nonce.endsWith('A') ? 'B' : 'A'}`;
    assert.deepEqual(verifySession([v, exp, otherNonce, mac].join('.'), key, now), { ok: false, reason: 'bad-signature' });
    const otherMac = `${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`;
    assert.deepEqual(verifySession([v, exp, nonce, otherMac].join('.'), key, now), { ok: false, reason: 'bad-signature' });
    assert.deepEqual(verifySession([v, exp, nonce, mac.slice(0, 10)].join('.'), key, now), { ok: false, reason: 'bad-signature' });
    assert.deepEqual(verifySession(s, sessionKey('another-token-0123456789'), now), { ok: false, reason: 'bad-signature' });
    for (const bad of ['', 'v1', 'v2.1.aaaaaaaaaaaaaaaa.x', `v1.${exp}.${nonce}`, `v1.-1.${nonce}.${mac}`, `${s}.x`]) {
      assert.equal(verifySession(bad, key, now).ok, false, bad);
    }
    assert.deepEqual(verifySession(undefined, key), { ok: false, reason: 'missing' });
  });

  it('is HttpOnly, SameSite=Strict, Path=/, Secure only when asked, with Max-Age', () => {
    assert.equal(sessionCookie('abc', { secure: false, maxAgeSeconds: 60 }), `${SESSION_COOKIE}=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict`);
    assert.equal(sessionCookie('', { secure: true, maxAgeSeconds: 0 }), `${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure`);
  });

  it('reads one cookie out of a Cookie header', () => {
    assert.equal(readCookie('a=1; ctgate_session=v1.x; b=2', 'ctgate_session'), 'v1.x');
    assert.equal(readCookie('xctgate_session=1', 'ctgate_session'), undefined);
    assert.equal(readCookie(undefined, 'a'), undefined);
  });

  it('takes only local paths as the page to return to after the login', () => {
    assert.equal(safeNextPath('/jobs/ord-1'), '/jobs/ord-1');
    assert.equal(safeNextPath('/viewer/viewer?StudyInstanceUIDs=1.2.3,2.25.4'), '/viewer/viewer?StudyInstanceUIDs=1.2.3,2.25.4');
    for (const bad of ['/viewer/viewer?StudyInstanceUIDs=1.2&x=1', '/viewer/viewer?StudyInstanceUIDs=javascript:1', '/viewer/x?StudyInstanceUIDs=1.2']) {
      assert.equal(safeNextPath(bad), undefined, bad);
    }
    for (const bad of ['//evil.example/x', '/\\evil.example', 'https://evil.example/', '/jobs?x=1', '/a//b', 'jobs', 42, undefined]) {
      assert.equal(safeNextPath(bad), undefined, String(bad));
    }
  });
});

describe('web: requireUser', () => {
  let server: Server;
  before(() => {
    const app = new Koa();
    app.use(async (ctx, next) => {
      if (ctx.path.startsWith('/api')) return requireBearer(TOKEN)(ctx, next);
      return requireUser(TOKEN)(ctx, next);
    });
    app.use((ctx) => {
      ctx.body = { user: ctx.state.user };
    });
    server = app.listen(0);
  });
  after(() => server.close());

  it('accepts a bearer token or a session cookie', async () => {
    const b = await request(server).get('/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200);
    assert.deepEqual(b.body, { user: { via: 'bearer' } });
    const c = await request(server)
      .get('/jobs')
      .set('Cookie', `${SESSION_COOKIE}=${signSession(key)}`)
      .expect(200);
    assert.equal(c.body.user.via, 'session');
  });

  it('sends a browser without a session to the login, and anything else a 401', async () => {
    const page = await request(server).get('/jobs/ord-1').set('Accept', 'text/html,application/xhtml+xml,*/*;q=0.8').expect(302);
    assert.equal(page.headers.location, '/login?next=%2Fjobs%2Ford-1');
    const img = await request(server).get('/jobs/ord-1/slices/3.png').set('Accept', 'image/avif,image/webp,*/*').expect(401);
    assert.match(img.headers['www-authenticate'] ?? '', /^Bearer/);
    await request(server).post('/jobs').set('Accept', 'text/html').expect(401);
  });

  it('refuses a wrong bearer token even beside a good session, an expired or forged cookie', async () => {
    await request(server)
      .get('/jobs')
      .set('Authorization', 'Bearer wrong-token-0123456789')
      .set('Cookie', `${SESSION_COOKIE}=${signSession(key)}`)
      .expect(401);
    await request(server)
      .get('/jobs')
      .set('Cookie', `${SESSION_COOKIE}=${signSession(key, 60, Date.now() - 120_000)}`)
      .expect(401);
    await request(server)
      .get('/jobs')
      .set('Cookie', `${SESSION_COOKIE}=${signSession(sessionKey('some-other-token-123456'))}`)
      .expect(401);
  });

  it('leaves requireBearer as it was: the cookie does not open the API', async () => {
    await request(server)
      .get('/api/jobs')
      .set('Cookie', `${SESSION_COOKIE}=${signSession(key)}`)
      .expect(401);
    await request(server).get('/api/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200);
  });
});
