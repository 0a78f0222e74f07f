/**
 * /viewer without a browser: the auth in front of it, index.html and the assets rewritten to live under /viewer/,
 * the generated app-config.js, the scoped CSP, and paths that try to leave the build's folder. Runs against the
 * installed @ohif/app build (skipped when it is not installed).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import request from 'supertest';
import type { Config } from '../../src/config/index.js';
import type { HttpDeps } from '../../src/http/app.js';
import { ohifDist, rewriteIndex, viewerConfig, viewerCsp, viewerRoutes } from '../../src/http/viewer.js';
import { unlessPresent } from '../helpers/requires.js';

const TOKEN = 'unit-token-0123456789abcdef';
const dist = ohifDist();

describe('viewer: index and config rewriting', () => {
  it('puts the build under /viewer/ and a nonce on each inline script', () => {
    const html =
      '<script>console.time("x"),window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">' +
      '<script defer src="/app.bundle.1.js"></script><a href="//elsewhere.example/">x</a>';
    const out = rewriteIndex(html, 'N0nce');
    assert.ok(out.includes('window.PUBLIC_URL="/viewer/"'));
    assert.ok(out.includes('href="/viewer/manifest.json"'));
    assert.ok(out.includes('src="/viewer/app.bundle.1.js"'));
    assert.ok(out.includes('<script nonce="N0nce">console.time'));
    assert.ok(out.includes('href="//elsewhere.example/"'), 'a protocol-relative link is not taken for a path');
  });

  it("names ctgate's proxy as the only data source", () => {
    const c = viewerConfig('https://ctgate.example/dicom-web') as { routerBasename: string; dataSources: { configuration: Record<string, unknown> }[] };
    assert.equal(c.routerBasename, '/viewer');
    assert.equal(c.dataSources.length, 1);
    for (const k of ['qidoRoot', 'wadoRoot', 'wadoUriRoot']) assert.equal(c.dataSources[0]?.configuration[k], 'https://ctgate.example/dicom-web');
  });

  it('keeps the CSP to this origin', () => {
    const csp = viewerCsp('abc');
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /connect-src 'self'(;|$)/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /https?:|\*/);
  });
});

describe('viewer: routes (the installed @ohif/app build)', { skip: unlessPresent(dist ? false : '@ohif/app is not installed') }, () => {
  let server: Server;
  const auth = { Authorization: `Bearer ${TOKEN}` };
  before(() => {
    const deps = { config: { publicUrl: 'http://127.0.0.1:0' } as Config, apiToken: TOKEN } as unknown as HttpDeps;
    const app = new Koa();
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (e) {
        const err = e as { status?: number; message: string };
        ctx.status = err.status ?? 500;
        ctx.body = { error: err.message };
      }
    });
    const r = viewerRoutes(deps);
    app.use(r.routes()).use(r.allowedMethods());
    server = app.listen(0);
  });
  after(() => server.close());

  it('sends a browser without a session to the login, and refuses anything else', async () => {
    const page = await request(server).get('/viewer/').set('Accept', 'text/html').expect(302);
    assert.equal(page.headers.location, '/login?next=%2Fviewer%2F');
    await request(server).get('/viewer/app-config.js').expect(401);
    await request(server).get('/viewer/app-config.js').set('Authorization', 'Bearer wrong').expect(401);
  });

  it('serves index.html (for any route of the viewer) with its CSP and no caching', async () => {
    for (const path of ['/viewer/', '/viewer/viewer', '/viewer/viewer/dicomweb']) {
      const res = await request(server).get(path).set(auth).expect(200);
      assert.match(res.headers['content-type'] ?? '', /text\/html/);
      assert.equal(res.headers['cache-control'], 'no-store');
      const nonce = /'nonce-([^']+)'/.exec(res.headers['content-security-policy'] ?? '')?.[1];
      assert.ok(nonce, 'a nonce in the CSP');
      assert.ok(res.text.includes(`<script nonce="${nonce}">`));
      assert.ok(res.text.includes('window.PUBLIC_URL="/viewer/"'));
      assert.doesNotMatch(res.text, /(href|src)="\/(?!viewer\/|\/)/, 'every local link under /viewer/');
    }
    const bare = await request(server).get('/viewer').set(auth).expect(302);
    assert.equal(bare.headers.location, '/viewer/');
  });

  it("generates app-config.js with the proxy on the request's origin (publicUrl with port 0)", async () => {
    const res = await request(server).get('/viewer/app-config.js').set(auth).set('Host', '127.0.0.1:8123').expect(200);
    assert.match(res.headers['content-type'] ?? '', /javascript/);
    assert.ok(res.text.startsWith('window.config = '));
    assert.ok(res.text.includes('"qidoRoot": "http://127.0.0.1:8123/dicom-web"'));
  });

  it('rewrites the webpack public path and stylesheet urls; serves wasm as application/wasm', async () => {
    const files = readdirSync(dist as string);
    const app = files.find((f) => /^app\.bundle\..*\.js$/.test(f)) as string;
    const js = await request(server).get(`/viewer/${app}`).set(auth).expect(200);
    assert.ok(js.text.includes('__webpack_require__.p = "/viewer/";'));
    assert.ok(!js.text.includes('__webpack_require__.p = "/";'));
    const css = await request(server).get('/viewer/app.bundle.css').set(auth).expect(200);
    assert.doesNotMatch(css.text, /url\(\/(?!viewer\/|\/)/);
    const wasm = files.find((f) => f.endsWith('.wasm')) as string;
    const w = await request(server).get(`/viewer/${wasm}`).set(auth).expect(200);
    assert.equal(w.headers['content-type'], 'application/wasm');
  });

  it('keeps every path inside the build', async () => {
    for (const path of ['/viewer/%2e%2e/package.json', '/viewer/..%2fpackage.json', '/viewer/%2e%2e%2f%2e%2e%2fpackage.json', '/viewer/nope.js']) {
      const res = await request(server).get(path).set(auth);
      assert.equal(res.status, 404, `${path}: ${res.status}`);
    }
    const bad = await request(server).get('/viewer/%E0%A4%A.js').set(auth);
    assert.equal(bad.status, 400);
  });
});
