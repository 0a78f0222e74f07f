/**
 * Sessions kept in Redis, limits on failed sign-ins, and refused requests' connections, against real gateways
 * and Redis (issue 16, items 4–6):
 * - the cookie is `__Host-ctgate_session`, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain; Chromium keeps it
 *   on http://127.0.0.1 and sends it back;
 * - Redis holds only the id's hash; the same cookie replayed after POST /logout opens neither /jobs nor /dicom-web;
 *   a session made with token A is refused once the gateway restarts with token B;
 * - 30 wrong logins or bearer tokens at once from one address: 429 with Retry-After past the limit (shared by
 *   two gateways on one Redis), the right token then refused from that address but accepted from another;
 * - a request refused before its body was read (no credentials, Content-Length 1e9, the body trickling) has its
 *   connection closed right after the answer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { sessionIdHash } from '../../src/http/sessions.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { deleteKeys } from '../helpers/redis.js';

const CHROMIUM = process.env.CTGATE_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN_B = 'test-token-B-0123456789abcdef';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request on its own connection, from `from` (a loopback address: 127.0.0.2 is another client). */
function call(port: number, path: string, o: { method?: string; headers?: Record<string, string>; body?: string; from?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: o.headers, localAddress: o.from ?? '127.0.0.1', agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

const login = (port: number, token: string, from?: string) =>
  call(port, '/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: `http://127.0.0.1:${port}` },
    body: new URLSearchParams({ token }).toString(),
    from,
  });

/** The session id out of a login's Set-Cookie. */
function sessionOf(a: Answer): string {
  const set = [a.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith('__Host-ctgate_session='));
  assert.ok(set, `a session cookie: ${JSON.stringify(a.headers['set-cookie'])}`);
  return set.split(';')[0]?.split('=')[1] as string;
}

const page = { Accept: 'text/html' };
const cookie = (id: string) => ({ Cookie: `__Host-ctgate_session=${id}` });

describe('web sessions in Redis, sign-in limits, refused uploads (gateway, Redis)', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway();
  });
  after(async () => {
    await gw.cleanup();
  });

  it('logs in: a __Host- cookie (Secure, HttpOnly, SameSite=Strict, Path=/, no Domain); Redis keeps only the id hash', async () => {
    const r = await login(gw.httpPort, TEST_TOKEN);
    assert.equal(r.status, 303);
    const set = [r.headers['set-cookie'] ?? []].flat();
    assert.equal(set.length, 1);
    assert.match(set[0] as string, /^__Host-ctgate_session=[\w-]{43}; Path=\/; Max-Age=28800; HttpOnly; SameSite=Strict; Secure$/);
    const id = sessionOf(r);
    const keys = await gw.redis.keys(`${gw.prefix}:session:*`);
    assert.deepEqual(keys, [`${gw.prefix}:session:${sessionIdHash(id)}`]);
    const raw = (await gw.redis.get(keys[0] as string)) ?? '';
    assert.ok(!raw.includes(id) && !raw.includes(TEST_TOKEN), 'neither the id nor the token is stored');
    const record = JSON.parse(raw);
    assert.equal(record.who, 'api-token');
    assert.ok(record.permissions.includes('results:read'));
    assert.equal(record.expiresAt - record.createdAt, 8 * 3600_000);
    const ttl = await gw.redis.pttl(keys[0] as string);
    assert.ok(ttl > 3500_000 && ttl <= 3600_000, `idle expiry of 1 h on the key (${ttl} ms)`);
    await gw.redis.del(keys[0] as string);
  });

  it('ends the session on logout: the same cookie replayed opens neither /jobs nor /dicom-web', async () => {
    const id = sessionOf(await login(gw.httpPort, TEST_TOKEN));
    assert.equal((await call(gw.httpPort, '/jobs', { headers: { ...page, ...cookie(id) } })).status, 200);
    const proxied = await call(gw.httpPort, '/dicom-web/studies', { headers: cookie(id) });
    assert.ok(proxied.status !== 401 && proxied.status !== 302, `the proxy past auth (${proxied.status})`);
    const out = await call(gw.httpPort, '/logout', { method: 'POST', headers: { ...cookie(id), Origin: `http://127.0.0.1:${gw.httpPort}` } });
    assert.equal(out.status, 303);
    assert.match(String(out.headers['set-cookie']), /^__Host-ctgate_session=; Path=\/; Max-Age=0; HttpOnly; SameSite=Strict; Secure$/);
    assert.equal(await gw.redis.exists(`${gw.prefix}:session:${sessionIdHash(id)}`), 0, 'deleted in Redis');
    const again = await call(gw.httpPort, '/jobs', { headers: { ...page, ...cookie(id) } });
    assert.equal(again.status, 302);
    assert.equal(again.headers.location, '/login?next=%2Fjobs');
    assert.equal((await call(gw.httpPort, '/jobs', { headers: cookie(id) })).status, 401);
    assert.equal((await call(gw.httpPort, '/dicom-web/studies', { headers: cookie(id) })).status, 401);
    assert.equal((await call(gw.httpPort, '/viewer/', { headers: cookie(id) })).status, 401);
  });

  it('refuses a session made with token A once the gateway runs with token B', async () => {
    const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
    const a = await startTestGateway({ CTGATE_REDIS_PREFIX: prefix });
    let b: TestGateway | undefined;
    try {
      const id = sessionOf(await login(a.httpPort, TEST_TOKEN));
      assert.equal((await call(a.httpPort, '/jobs', { headers: cookie(id) })).status, 200);
      await a.stop();
      b = await startTestGateway({ CTGATE_REDIS_PREFIX: prefix, CTGATE_API_TOKEN: TOKEN_B });
      assert.equal((await call(b.httpPort, '/jobs', { headers: cookie(id) })).status, 401);
      assert.equal((await call(b.httpPort, '/dicom-web/studies', { headers: cookie(id) })).status, 401);
      assert.equal(await b.redis.exists(`${prefix}:session:${sessionIdHash(id)}`), 0, 'the revoked session is deleted');
      const idB = sessionOf(await login(b.httpPort, TOKEN_B));
      assert.equal((await call(b.httpPort, '/jobs', { headers: cookie(idB) })).status, 200);
    } finally {
      await b?.stop();
      await deleteKeys(prefix);
    }
  });

  it('30 wrong logins at once: 429 with Retry-After past 20, counted across gateways; the right token works from elsewhere', async () => {
    const from = '127.0.0.2';
    const second = await startTestGateway({ CTGATE_REDIS_PREFIX: gw.prefix });
    try {
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) => login(i % 2 ? second.httpPort : gw.httpPort, `wrong-token-${i}-0123456789`, from)),
      );
      const statuses = answers.map((a) => a.status).sort();
      assert.deepEqual(statuses, [...Array(20).fill(401), ...Array(10).fill(429)], `${Date.now() - started} ms`);
      for (const a of answers.filter((x) => x.status === 429)) {
        const s = Number(a.headers['retry-after']);
        assert.ok(s > 0 && s <= 300, `Retry-After ${a.headers['retry-after']}`);
        assert.equal(a.headers['set-cookie'], undefined);
      }
      // Blocked: the right token is not even looked at from that address, on either gateway, at the login or as a bearer.
      assert.equal((await login(gw.httpPort, TEST_TOKEN, from)).status, 429);
      assert.equal((await call(second.httpPort, '/api/jobs', { headers: { Authorization: `Bearer ${TEST_TOKEN}` }, from })).status, 429);
      // Another address is not affected.
      assert.equal((await login(gw.httpPort, TEST_TOKEN, '127.0.0.3')).status, 303);
      assert.equal((await call(gw.httpPort, '/api/jobs', { headers: { Authorization: `Bearer ${TEST_TOKEN}` }, from: '127.0.0.3' })).status, 200);
    } finally {
      await second.stop();
    }
  });

  it('30 wrong bearer tokens at once: 429 with Retry-After past 20; the right token works from another address', async () => {
    const from = '127.0.0.4';
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        call(gw.httpPort, i % 2 ? '/api/jobs' : '/dicom-web/studies', { headers: { Authorization: `Bearer wrong-${i}-0123456789abcdef` }, from }),
      ),
    );
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [...Array(20).fill(401), ...Array(10).fill(429)]);
    for (const a of answers.filter((x) => x.status === 429)) assert.match(String(a.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal((await call(gw.httpPort, '/api/jobs', { headers: { Authorization: `Bearer ${TEST_TOKEN}` }, from })).status, 429);
    assert.equal((await call(gw.httpPort, '/api/jobs', { headers: { Authorization: `Bearer ${TEST_TOKEN}` }, from: '127.0.0.5' })).status, 200);
    // Requests without a credential are no guesses: still the plain 401 from the blocked address.
    assert.equal((await call(gw.httpPort, '/api/jobs', { from })).status, 401);
  });

  /** Sends headers announcing a 1e9-byte body, a few bytes of it, then a byte every 200 ms; the answer and when the server closed. */
  async function trickle(path: string, headers: string[]): Promise<{ head: string; closedAfterMs: number }> {
    const s = net.connect(gw.httpPort, '127.0.0.1');
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write([`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Length: 1000000000', ...headers, '', 'abc'].join('\r\n'));
    const feed = setInterval(() => s.writable && s.write('x'), 200);
    let got = '';
    let answeredAt = 0;
    try {
      return await new Promise((resolve, reject) => {
        const limit = setTimeout(() => reject(new Error(`still open 5 s after the answer: ${got.split('\r\n')[0]}`)), 5000 + 2000);
        s.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (!answeredAt && got.includes('\r\n\r\n')) answeredAt = Date.now();
        });
        s.on('error', () => {}); // a reset after the close counts as closed
        s.on('close', () => {
          clearTimeout(limit);
          if (!answeredAt) reject(new Error('closed without an answer'));
          else resolve({ head: got.slice(0, got.indexOf('\r\n\r\n')), closedAfterMs: Date.now() - answeredAt });
        });
      });
    } finally {
      clearInterval(feed);
      s.destroy();
    }
  }

  it('closes the connection of a request refused before its body was read, not waiting for the body', async () => {
    for (const [path, headers, status] of [
      ['/api/mappings/reload', ['Content-Type: application/json'], 401],
      ['/dicom-web/studies', ['Content-Type: multipart/related; type="application/dicom"; boundary=x'], 401],
      ['/login', ['Content-Type: application/x-www-form-urlencoded'], 413],
    ] as const) {
      const r = await trickle(path, [...headers]);
      assert.match(r.head, new RegExp(`^HTTP/1.1 ${status} `), `${path}: ${r.head}`);
      assert.match(r.head, /\r\nConnection: close\r\n/i, path);
      assert.ok(r.closedAfterMs < 2000, `${path}: closed ${r.closedAfterMs} ms after the answer`);
    }
  });

  it('Chromium keeps the Secure __Host- cookie on http://127.0.0.1 and sends it back', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}` }, async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const p = await browser.newPage();
      const base = `http://127.0.0.1:${gw.httpPort}`;
      await p.goto(`${base}/jobs`);
      assert.equal(p.url(), `${base}/login?next=%2Fjobs`);
      await p.fill('#token', TEST_TOKEN);
      await Promise.all([p.waitForURL(`${base}/jobs`), p.click('button[type=submit]')]);
      const [c, ...rest] = await p.context().cookies();
      assert.equal(rest.length, 0);
      assert.equal(c?.name, '__Host-ctgate_session');
      assert.equal(c?.secure, true);
      assert.equal(c?.httpOnly, true);
      assert.equal(c?.sameSite, 'Strict');
      assert.equal(c?.path, '/');
      assert.equal((await p.goto(`${base}/jobs`))?.status(), 200, 'the cookie came back');
      await Promise.all([p.waitForURL(`${base}/login`), p.click('header form button')]);
      assert.deepEqual(await p.context().cookies(), [], 'logged out: the cookie is gone');
    } finally {
      await browser.close();
    }
  });
});
