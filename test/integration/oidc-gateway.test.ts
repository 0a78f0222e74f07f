/**
 * OIDC on a running gateway: access tokens from a local identity provider (JWKS over HTTP on 127.0.0.1) open the
 * API, the pages, the DICOMweb proxy and /metrics beside the API token; bad ones get 401 invalid_token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { AUDIENCE, makeKey, signJwt, startIdp, type TestIdp } from '../helpers/oidc.js';

describe('gateway with OIDC bearer tokens', () => {
  const key = makeKey('gw-rsa', 'RS256');
  const other = makeKey('gw-other', 'RS256');
  let idp: TestIdp;
  let gw: TestGateway;
  let http: ReturnType<typeof request>;
  const html = { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };

  before(async () => {
    idp = await startIdp([key]);
    gw = await startTestGateway({
      CTGATE_OIDC_ISSUER: idp.issuer,
      CTGATE_OIDC_AUDIENCE: AUDIENCE,
      CTGATE_OIDC_REQUIRED_ROLE: 'ctgate-user',
    });
    http = request(`http://127.0.0.1:${gw.httpPort}`);
  });
  after(async () => {
    await gw?.cleanup();
    await idp?.close();
  });

  const good = () => signJwt(key, idp.claims({ realm_access: { roles: ['ctgate-user'] } }));

  it('keeps /health open', async () => {
    assert.equal((await http.get('/health')).status, 200);
  });

  it('accepts a valid access token on the API, the pages and /metrics', async () => {
    const bearer = { Authorization: `Bearer ${good()}` };
    const api = await http.get('/api/jobs').set(bearer);
    assert.equal(api.status, 200);
    assert.ok(api.body.counts);
    const page = await http.get('/jobs').set(bearer).set(html);
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type'] ?? '', /text\/html/);
    assert.equal((await http.get('/metrics').set(bearer)).status, 200);
    // No PACS configured: the proxy answers past auth (not 401).
    assert.notEqual((await http.get('/dicom-web/studies').set(bearer)).status, 401);
  });

  it('refuses invalid tokens with 401 invalid_token (403 without the role)', async () => {
    const cases: [string, string][] = [
      [signJwt(other, idp.claims({ roles: ['ctgate-user'] })), 'unknown signing key'],
      [signJwt(key, idp.claims({ roles: ['ctgate-user'], aud: 'someone-else' })), 'audience not accepted'],
      [signJwt(key, idp.claims({ roles: ['ctgate-user'], exp: Math.floor(Date.now() / 1000) - 3600 })), 'token expired'],
    ];
    for (const [tok, reason] of cases) {
      for (const path of ['/api/jobs', '/jobs']) {
        const r = await http.get(path).set('Authorization', `Bearer ${tok}`).set(html);
        assert.equal(r.status, 401, `${path}: ${reason}`);
        assert.equal(r.headers['www-authenticate'], `Bearer realm="ctgate", error="invalid_token", error_description="${reason}"`);
      }
    }
    const noRole = await http.get('/api/jobs').set('Authorization', `Bearer ${signJwt(key, idp.claims())}`);
    assert.equal(noRole.status, 403);
    assert.match(noRole.headers['www-authenticate'] ?? '', /error="insufficient_scope"/);
  });

  it('still accepts the API token, and still sends a browser without credentials to the login', async () => {
    const bearer = { Authorization: `Bearer ${TEST_TOKEN}` };
    assert.equal((await http.get('/api/jobs').set(bearer)).status, 200);
    assert.equal((await http.get('/jobs').set(bearer).set(html)).status, 200);
    assert.equal((await http.get('/api/jobs').set('Authorization', 'Bearer wrong-token-0123456789')).status, 401);
    const redirect = await http.get('/jobs').set(html);
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.location, '/login?next=%2Fjobs');
    const login = await http.get('/login');
    assert.match(login.text, /proxy\/viewer that sends your organisation(&#39;|&#x27;|')s bearer token/);
  });
});
