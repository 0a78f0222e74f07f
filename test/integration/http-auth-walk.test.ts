/**
 * The authentication gate against every spelling of every path: each route every router registers (read from the
 * routers themselves, so a new route is walked without editing this test) is called in case, encoding, slash and
 * dot-segment variants, sent byte for byte as written (node:http, no client-side URL normalisation), against a real
 * gateway on real Redis. Without a credential every variant is refused; with a credential that lacks the route's
 * permission, every variant is refused with 403.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { Config } from '../../src/config/index.js';
import { appRouters } from '../../src/http/app.js';
import type { AuditLog } from '../../src/http/audit.js';
import { silentLogger } from '../../src/observability/log.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';

const READER = 'reader-token-0123456789abcdef';
const PACS_WRITER = 'pacs-writer-token-0123456789ab';

interface Route {
  methods: string[];
  path: string;
}

/** A concrete path for a route pattern; a regular-expression route needs a sample here, or the test fails. */
const REGEXP_SAMPLES: Record<string, string> = {
  '/^\\/dicom-web(?:\\/.*)?$/': '/dicom-web/studies',
  '/^\\/viewer$/': '/viewer',
  '/^\\/viewer\\/.*$/': '/viewer/index.html',
};

function registeredRoutes(): Route[] {
  const deps = {
    config: { publicUrl: 'http://127.0.0.1:8080', worker: { modelsManifest: 'models/manifest.json' }, redisPrefix: 'walk', metricsOpen: false } as Config,
    apiToken: TEST_TOKEN,
    auth: { apiToken: TEST_TOKEN },
    log: silentLogger,
  } as unknown as Parameters<typeof appRouters>[0];
  const routes: Route[] = [];
  for (const router of appRouters(deps, {} as AuditLog)) {
    for (const layer of router.stack) {
      const raw = layer.path as unknown;
      const path =
        raw instanceof RegExp
          ? REGEXP_SAMPLES[String(raw)]
          : String(raw)
              .replace(/:id/g, 'ord-0123abcd')
              .replace(/:n\.png/, '1.png')
              .replace(/:k\.png/, '3.png');
      assert.ok(path, `no sample path for the route ${String(raw)}: add one to REGEXP_SAMPLES`);
      const methods = layer.methods.length > 10 ? ['GET', 'POST', 'PUT', 'DELETE'] : layer.methods.filter((m) => m !== 'HEAD');
      routes.push({ methods, path });
    }
  }
  return routes;
}

const hex = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;

/** Spellings of a path that a router, a proxy or a browser might take for the same resource. */
export function spellings(path: string): string[] {
  const [, first = '', ...rest] = path.split('/');
  const tail = rest.length ? `/${rest.join('/')}` : '';
  const alternate = [...path].map((c, i) => (i % 2 ? c.toUpperCase() : c.toLowerCase())).join('');
  const out = [
    path,
    path.toUpperCase(),
    `/${first.charAt(0).toUpperCase()}${first.slice(1)}${tail}`,
    `/${first.toUpperCase()}${tail}`,
    alternate,
    `/${hex(first.charAt(0))}${first.slice(1)}${tail}`,
    `/${[...first].map(hex).join('')}${tail}`,
    `/%25${hex(first.charAt(0)).slice(1)}${first.slice(1)}${tail}`,
    `//${first}${tail}`,
    `${path}/`,
    `/.${path}`,
    `/x/..${path}`,
    `/${first};x=1${tail}`,
    `\\${first}${tail.replace(/\//g, '\\')}`,
    rest.length ? `/${first}%2F${rest.join('/')}` : `/${first}%2f`,
  ];
  return [...new Set(out)];
}

function call(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { accept: 'application/json', ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => {
        if (process.env.WALK_DEBUG) console.error(new Date().toISOString(), method, path, res.statusCode);
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const OPEN = new Set(['/health', '/ready', '/login', '/logout']);

describe('the authentication gate: every route in every spelling', () => {
  let gw: TestGateway;
  const routes = registeredRoutes();
  before(async () => {
    gw = await startTestGateway({
      CTGATE_API_TOKENS: `viewer:results:read:${READER},feeder:results:read+pacs:write:${PACS_WRITER}`,
      CTGATE_PACS_URL: 'http://127.0.0.1:9/dicom-web',
      // The walk sends hundreds of wrong credentials from one address; the limit has its own test (web-sessions).
      CTGATE_AUTH_FAIL_LIMIT: '100000',
    });
  });
  after(async () => {
    await gw.cleanup();
  });

  it('finds the routes of every router', () => {
    const paths = routes.map((r) => r.path);
    for (const p of [
      '/api/jobs',
      '/api/messages/ord-0123abcd/replay',
      '/api/mappings/reload',
      '/api/jobs/ord-0123abcd/retry',
      '/jobs',
      '/dicom-web/studies',
      '/viewer/index.html',
      '/metrics',
    ]) {
      assert.ok(paths.includes(p), `${p} is walked`);
    }
  });

  it('refuses every spelling of every protected route without a credential (401)', async () => {
    const wrong: string[] = [];
    let calls = 0;
    for (const r of routes) {
      if (OPEN.has(r.path)) continue;
      for (const method of r.methods) {
        for (const path of spellings(r.path)) {
          const res = await call(gw.httpPort, method, path, method === 'GET' ? {} : { 'content-type': 'application/json', 'content-length': '0' });
          calls++;
          // 400: a path the gate cannot decode is refused before any router; never 2xx, 3xx, 404 or 5xx.
          if (res.status !== 401 && res.status !== 400 && res.status !== 429) wrong.push(`${method} ${path} -> ${res.status}`);
          assert.doesNotMatch(res.body, /MRN|PATIENT|MSH\|/);
        }
      }
    }
    assert.ok(calls > 300, `walked ${calls} requests`);
    assert.deepEqual(wrong, []);
  });

  it('refuses a wrong token and a forged cookie in every spelling of the admin API', async () => {
    for (const path of spellings('/api/messages')) {
      // 400: Node's HTTP parser refuses a target that does not start with a slash before ctgate sees it.
      assert.ok([400, 401].includes((await call(gw.httpPort, 'GET', path, { authorization: 'Bearer wrong-token-0123456789' })).status), path);
      for (const cookie of ['__Host-ctgate_session=Zm9yZ2VkLXNlc3Npb24taWQtMDEyMzQ1Njc4OWFi', 'ctgate_session=v1.zzzzzz.AAAAAAAAAAAAAAAA.forged']) {
        assert.ok([400, 401].includes((await call(gw.httpPort, 'GET', path, { cookie })).status), `${path} ${cookie}`);
      }
    }
  });

  it('refuses a read-only token every admin action and every PACS write, in every spelling (403)', async () => {
    const admin = [
      ['GET', '/api/messages'],
      ['GET', '/api/messages/ord-0123abcd'],
      ['GET', '/api/audit'],
      ['POST', '/api/messages/ord-0123abcd/replay'],
      ['POST', '/api/mappings/reload'],
      ['POST', '/api/jobs/ord-0123abcd/retry'],
      ['POST', '/dicom-web/studies'],
      ['DELETE', '/dicom-web/studies/1.2.3'],
    ];
    const wrong: string[] = [];
    for (const [method, p] of admin) {
      for (const path of spellings(p as string)) {
        const res = await call(gw.httpPort, method as string, path, { authorization: `Bearer ${READER}`, 'content-length': '0' });
        if (res.status !== 403 && res.status !== 400) wrong.push(`${method} ${path} -> ${res.status}`);
      }
    }
    assert.deepEqual(wrong, []);
    // What it may do, it can: read the job list.
    assert.equal((await call(gw.httpPort, 'GET', '/api/jobs', { authorization: `Bearer ${READER}` })).status, 200);
  });

  it('keeps STOW-RS through the proxy from the API token (no pacs:write) and, while switched off, from everyone', async () => {
    const stow = { 'content-type': 'multipart/related; type="application/dicom"; boundary=x', 'content-length': '0' };
    const admin = await call(gw.httpPort, 'POST', '/dicom-web/studies', { authorization: `Bearer ${TEST_TOKEN}`, ...stow });
    assert.equal(admin.status, 403);
    assert.match(admin.body, /pacs:write/);
    const writer = await call(gw.httpPort, 'POST', '/dicom-web/studies', { authorization: `Bearer ${PACS_WRITER}`, ...stow });
    assert.equal(writer.status, 403);
    assert.match(writer.body, /CTGATE_PROXY_STOW/);
  });

  it('records every write in the audit log with who, what and the outcome, and no patient data', async () => {
    await call(gw.httpPort, 'POST', '/api/mappings/reload', { authorization: `Bearer ${TEST_TOKEN}`, 'content-length': '0' });
    await call(gw.httpPort, 'POST', '/dicom-web/studies', {
      authorization: `Bearer ${PACS_WRITER}`,
      'content-type': 'multipart/related; boundary=x',
      'content-length': '0',
    });
    const res = await call(gw.httpPort, 'GET', '/api/audit', { authorization: `Bearer ${TEST_TOKEN}` });
    assert.equal(res.status, 200);
    const items = (JSON.parse(res.body) as { items: { who: string; action: string; status: number; at: string }[] }).items;
    const reload = items.find((i) => i.action === 'POST /api/mappings/reload' && i.status === 200);
    assert.ok(reload, JSON.stringify(items.slice(0, 5)));
    assert.equal(reload.who, 'api-token');
    assert.ok(Date.parse(reload.at) > Date.now() - 60_000);
    const stow = items.find((i) => i.who === 'token:feeder');
    assert.ok(stow);
    assert.equal(stow.status, 403);
    // Refused writes from nobody are there too.
    assert.ok(items.some((i) => i.who === 'anonymous' && i.status === 401));
  });

  it('marks patient data uncacheable and unsniffable', async () => {
    for (const path of ['/api/jobs', '/jobs', '/dicom-web/studies']) {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port: gw.httpPort, path, headers: { authorization: `Bearer ${TEST_TOKEN}` }, agent: false }, resolve).on('error', reject);
      });
      res.resume();
      assert.equal(res.headers['cache-control'], 'no-store', path);
      assert.equal(res.headers['x-content-type-options'], 'nosniff', path);
    }
  });
});
