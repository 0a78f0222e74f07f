/**
 * Sessions for the pages: the cookie (__Host-, Secure, HttpOnly, SameSite=Strict), opaque ids kept on the server
 * (only their hash), requireUser (bearer or a live session; a logged-out, expired, unknown or revoked one refused),
 * and the limit on failed authentications per client address (429 with Retry-After, no check while blocked).
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import request from 'supertest';
import {
  type AuthOptions,
  readCookie,
  requireBearer,
  requireUser,
  SESSION_COOKIE,
  SESSION_COOKIE_INSECURE,
  safeNextPath,
  secureCookies,
  sessionCookie,
} from '../../src/http/auth.js';
import { AuthFailureLimiter, clientKey } from '../../src/http/auth-limits.js';
import { credentialFingerprint, newSessionId, SESSION_ID, type SessionRecord, sessionIdHash } from '../../src/http/sessions.js';
import { MemorySessionStore } from '../helpers/sessions.js';

const TOKEN = 'web-auth-token-0123456789';
const OTHER = 'some-other-token-123456';
const apiTokenSession: Omit<SessionRecord, 'createdAt' | 'expiresAt'> = {
  who: 'api-token',
  permissions: ['results:read', 'jobs:admin'],
  fingerprint: credentialFingerprint(TOKEN),
};

describe('web: session cookie and ids', () => {
  it('is __Host-, HttpOnly, SameSite=Strict, Path=/, Secure, with Max-Age; the plain name only without Secure', () => {
    assert.equal(SESSION_COOKIE, '__Host-ctgate_session');
    assert.equal(sessionCookie('abc', { secure: true, maxAgeSeconds: 60 }), '__Host-ctgate_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure');
    assert.equal(sessionCookie('', { secure: true, maxAgeSeconds: 0 }), '__Host-ctgate_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure');
    assert.equal(sessionCookie('abc', { secure: false, maxAgeSeconds: 60 }), `${SESSION_COOKIE_INSECURE}=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict`);
    assert.doesNotMatch(sessionCookie('abc', { secure: true, maxAgeSeconds: 60 }), /Domain=/i);
  });

  it('is Secure for an https public URL and for a loopback one (browsers keep those), not for plain http elsewhere', () => {
    for (const u of ['https://ctgate.example', 'http://127.0.0.1:8080', 'http://localhost:8080', 'http://[::1]:8080', 'http://127.0.0.2']) {
      assert.equal(secureCookies(u), true, u);
    }
    for (const u of ['http://ctgate.example', 'http://10.0.0.5:8080', 'http://localhost.evil.example', 'not a url']) assert.equal(secureCookies(u), false, u);
  });

  it('ids are 32 random bytes; the store keys their hash; fingerprints follow the token and do not show it', () => {
    const a = newSessionId();
    assert.match(a, SESSION_ID);
    assert.notEqual(a, newSessionId());
    assert.notEqual(sessionIdHash(a), a);
    assert.notEqual(credentialFingerprint(TOKEN), credentialFingerprint(`${TOKEN}x`));
    assert.ok(!credentialFingerprint(TOKEN).includes(TOKEN));
  });

  it('reads one cookie out of a Cookie header', () => {
    assert.equal(readCookie('a=1; __Host-ctgate_session=abc; b=2', SESSION_COOKIE), 'abc');
    assert.equal(readCookie('a=1; ctgate_session=v1.x; b=2', 'ctgate_session'), 'v1.x');
    assert.equal(readCookie('xctgate_session=1', 'ctgate_session'), undefined);
    assert.equal(readCookie('ctgate_session=1', SESSION_COOKIE), undefined);
    assert.equal(readCookie(undefined, 'a'), undefined);
  });

  it('takes only local paths as the page to return to after the login', () => {
    assert.equal(safeNextPath('/jobs/ord-1'), '/jobs/ord-1');
    assert.equal(safeNextPath('/viewer/viewer?StudyInstanceUIDs=1.2.3,2.25.4'), '/viewer/viewer?StudyInstanceUIDs=1.2.3,2.25.4');
    // A UUID study UID as some archives publish them (COVID-CT-MD): results stay in that study, so the viewer opens it.
    const uuidStudy = '/viewer/viewer?StudyInstanceUIDs=4bae1d63-eb4e-4386-bd1b-68e8ba379989';
    assert.equal(safeNextPath(uuidStudy), uuidStudy);
    for (const bad of [
      '/viewer/viewer?StudyInstanceUIDs=1.2&x=1',
      '/viewer/viewer?StudyInstanceUIDs=javascript:1',
      '/viewer/x?StudyInstanceUIDs=1.2',
      '/viewer/viewer?StudyInstanceUIDs=4bae1d63-eb4e-4386-bd1b-68e8ba37998z',
    ]) {
      assert.equal(safeNextPath(bad), undefined, bad);
    }
    for (const bad of ['//evil.example/x', '/\\evil.example', 'https://evil.example/', '/jobs?x=1', '/a//b', 'jobs', 42, undefined]) {
      assert.equal(safeNextPath(bad), undefined, String(bad));
    }
  });
});

function appWith(auth: AuthOptions, proxy = false): Server {
  const app = new Koa();
  app.proxy = proxy;
  app.use(async (ctx, next) => {
    if (ctx.path.startsWith('/api')) return requireBearer(auth)(ctx, next);
    return requireUser(auth)(ctx, next);
  });
  app.use((ctx) => {
    const u = ctx.state.user;
    ctx.body = { user: { ...u, permissions: [...u.permissions] } };
  });
  return app.listen(0, '127.0.0.1');
}

describe('web: requireUser', () => {
  let server: Server;
  const store = new MemorySessionStore();
  before(() => {
    server = appWith({ apiToken: TOKEN, sessions: store });
  });
  after(() => server.close());
  const withSession = (id: string) => `${SESSION_COOKIE}=${id}`;

  it('accepts a bearer token or a live session cookie', async () => {
    const b = await request(server).get('/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200);
    assert.equal(b.body.user.via, 'bearer');
    assert.equal(b.body.user.who, 'api-token');
    const { id, record } = await store.create(apiTokenSession);
    const c = await request(server).get('/jobs').set('Cookie', withSession(id)).expect(200);
    assert.equal(c.body.user.via, 'session');
    assert.equal(c.body.user.who, 'api-token');
    assert.deepEqual(c.body.user.permissions, ['results:read', 'jobs:admin']);
    assert.equal(c.body.user.expiresAt, record.expiresAt);
    assert.ok(!store.records.has(id), 'the store keys the hash, not the id');
  });

  it('sends a browser without a session to the login, and anything else a 401', async () => {
    const page = await request(server).get('/jobs/ord-1').set('Accept', 'text/html,application/xhtml+xml,*/*;q=0.8').expect(302);
    assert.equal(page.headers.location, '/login?next=%2Fjobs%2Ford-1');
    const img = await request(server).get('/jobs/ord-1/slices/3.png').set('Accept', 'image/avif,image/webp,*/*').expect(401);
    assert.match(img.headers['www-authenticate'] ?? '', /^Bearer/);
    await request(server).post('/jobs').set('Accept', 'text/html').expect(401);
  });

  it('refuses a wrong bearer token even beside a good session, and expired, unknown, deleted or foreign sessions', async () => {
    const { id } = await store.create(apiTokenSession);
    await request(server).get('/jobs').set('Authorization', 'Bearer wrong-token-0123456789').set('Cookie', withSession(id)).expect(401);
    // Expired: past its absolute end (made 9 h ago with an 8 h lifetime), and past its idle end.
    const old = await store.create(apiTokenSession, Date.now() - 9 * 3600_000);
    await request(server).get('/jobs').set('Cookie', withSession(old.id)).expect(401);
    const idle = await store.create(apiTokenSession, Date.now() - 2 * 3600_000);
    await request(server).get('/jobs').set('Cookie', withSession(idle.id)).expect(401);
    // Unknown (a well-formed id nobody was given), malformed, and one that was deleted (logged out).
    await request(server).get('/jobs').set('Cookie', withSession(newSessionId())).expect(401);
    await request(server).get('/jobs').set('Cookie', withSession('v1.abc.def')).expect(401);
    await store.delete(id);
    const gone = await request(server).get('/jobs').set('Cookie', withSession(id)).expect(401);
    assert.match(String(gone.headers['set-cookie']), /^__Host-ctgate_session=; Path=\/; Max-Age=0/, 'the stale cookie is cleared');
    // The plain-named cookie is not read where cookies are Secure (a sibling host could set that one).
    const live = await store.create(apiTokenSession);
    await request(server).get('/jobs').set('Cookie', `${SESSION_COOKIE_INSECURE}=${live.id}`).expect(401);
    await request(server).get('/jobs').set('Cookie', withSession(live.id)).expect(200);
  });

  it('refuses (and deletes) a session made with a token that is no longer the one configured', async () => {
    const { id } = await store.create({ ...apiTokenSession, fingerprint: credentialFingerprint(OTHER) });
    await request(server).get('/jobs').set('Cookie', withSession(id)).expect(401);
    assert.equal(await store.touch(id), undefined, 'revoked for good');
  });

  it('answers 503, not 401, when the session store does not answer', async () => {
    const { id } = await store.create(apiTokenSession);
    store.down = true;
    try {
      const r = await request(server).get('/jobs').set('Cookie', withSession(id)).expect(503);
      assert.equal(r.headers['retry-after'], '5');
    } finally {
      store.down = false;
    }
    await request(server).get('/jobs').set('Cookie', withSession(id)).expect(200);
  });

  it('leaves requireBearer as it was: the cookie does not open the API', async () => {
    const { id } = await store.create(apiTokenSession);
    await request(server).get('/api/jobs').set('Cookie', withSession(id)).expect(401);
    await request(server).get('/api/jobs').set('Authorization', `Bearer ${TOKEN}`).expect(200);
  });
});

describe('web: failed authentications per client address', () => {
  it('counts IPv4 (also mapped) as is and IPv6 by its /64', () => {
    assert.equal(clientKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientKey('10.1.2.3'), '10.1.2.3');
    assert.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8:1:2::99'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
  });

  it('answers 429 with Retry-After past the limit, checks no token then, and counts per address', async () => {
    const store = new MemorySessionStore();
    const failures = new AuthFailureLimiter({ limit: 3, windowSeconds: 60 });
    // Behind a trusted proxy (app.proxy): the client address comes from X-Forwarded-For.
    const server = appWith({ apiToken: TOKEN, sessions: store, failures }, true);
    try {
      const from = (ip: string) => ({ 'X-Forwarded-For': ip });
      for (let i = 0; i < 3; i++) {
        await request(server).get('/api/jobs').set(from('10.0.0.1')).set('Authorization', `Bearer wrong-token-${i}-0123456789`).expect(401);
      }
      // Successes and requests without a credential count nothing.
      await request(server).get('/api/jobs').set(from('10.0.0.1')).set('Authorization', `Bearer ${TOKEN}`).expect(200);
      await request(server).get('/api/jobs').set(from('10.0.0.1')).expect(401);
      const over = await request(server).get('/api/jobs').set(from('10.0.0.1')).set('Authorization', 'Bearer wrong-token-x-0123456789').expect(429);
      assert.match(over.headers['retry-after'] ?? '', /^\d+$/);
      assert.ok(Number(over.headers['retry-after']) > 0 && Number(over.headers['retry-after']) <= 60);
      // Blocked now: even the right token is not looked at, nor a session cookie, on the pages too.
      await request(server).get('/api/jobs').set(from('10.0.0.1')).set('Authorization', `Bearer ${TOKEN}`).expect(429);
      const { id } = await store.create(apiTokenSession);
      await request(server).get('/jobs').set(from('10.0.0.1')).set('Cookie', `${SESSION_COOKIE}=${id}`).expect(429);
      // Another address is not affected.
      await request(server).get('/api/jobs').set(from('10.0.0.2')).set('Authorization', `Bearer ${TOKEN}`).expect(200);
      await request(server).get('/jobs').set(from('10.0.0.2')).set('Cookie', `${SESSION_COOKIE}=${id}`).expect(200);
      // Unknown session cookies count as failures too.
      for (let i = 0; i < 3; i++) await request(server).get('/jobs').set(from('10.0.0.3')).set('Cookie', `${SESSION_COOKIE}=${newSessionId()}`).expect(401);
      await request(server).get('/jobs').set(from('10.0.0.3')).set('Cookie', `${SESSION_COOKIE}=${newSessionId()}`).expect(429);
    } finally {
      server.close();
    }
  });

  it('ignores X-Forwarded-For unless the proxy is trusted', async () => {
    const failures = new AuthFailureLimiter({ limit: 2, windowSeconds: 60 });
    const server = appWith({ apiToken: TOKEN, failures });
    try {
      for (const ip of ['10.0.0.1', '10.0.0.2']) {
        await request(server).get('/api/jobs').set('X-Forwarded-For', ip).set('Authorization', 'Bearer wrong-token-0123456789').expect(401);
      }
      await request(server).get('/api/jobs').set('X-Forwarded-For', '10.0.0.3').set('Authorization', 'Bearer wrong-token-0123456789').expect(429);
    } finally {
      server.close();
    }
  });
});
