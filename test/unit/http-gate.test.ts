/** The gate's pure parts: path normalisation, which paths are open, which permission a request needs, token config. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { parseNamedTokens, parsePermissions } from '../../src/config/permissions.js';
import { isOpenPath, normalisePath } from '../../src/http/gate.js';
import { permissionFor } from '../../src/http/permissions.js';

describe('normalisePath', () => {
  it('folds case, encoding, slashes, dot segments and parameters into one canonical form', () => {
    for (const raw of [
      '/api/jobs',
      '/API/JOBS',
      '/Api/jobs',
      '/%61pi/jobs',
      '/%2561pi/jobs',
      '//api//jobs/',
      '/./api/jobs',
      '/x/../api/jobs',
      '\\api\\jobs',
      '/api;v=1/jobs',
      '/api%2Fjobs',
    ]) {
      assert.equal(normalisePath(raw), '/api/jobs', raw);
    }
    assert.equal(normalisePath('/../../api'), '/api');
    assert.equal(normalisePath('/'), '/');
  });
  it('refuses what cannot be decoded, control characters and encoding nested four times', () => {
    assert.equal(normalisePath('/api/%E0%A4%A'), undefined);
    assert.equal(normalisePath('/api/%00jobs'), undefined);
    assert.equal(normalisePath('/api/%0d%0ajobs'), undefined);
    assert.equal(normalisePath('/%25252561pi'), undefined);
  });
});

describe('isOpenPath', () => {
  it('opens the probes, login and logout only as written', () => {
    for (const p of ['/health', '/ready', '/login', '/logout', '/HEALTH', '/Ready/']) assert.equal(isOpenPath(p, false), true, p);
    for (const p of ['/%68ealth', '/health/..', '/./health', '//health', '/health;x', '/metrics', '/api/jobs', '/', '/healthz'])
      assert.equal(isOpenPath(p, false), false, p);
    assert.equal(isOpenPath('/metrics', true), true);
  });
});

describe('permissionFor', () => {
  it('asks pacs:write for any write to the proxy, jobs:admin for raw HL7, the audit log and every API write', () => {
    assert.equal(permissionFor('GET', '/dicom-web/studies'), 'results:read');
    assert.equal(permissionFor('POST', '/dicom-web/studies'), 'pacs:write');
    assert.equal(permissionFor('DELETE', '/dicom-web/studies/1.2'), 'pacs:write');
    assert.equal(permissionFor('GET', '/api/jobs/ord-1'), 'results:read');
    assert.equal(permissionFor('GET', '/api/messages'), 'jobs:admin');
    assert.equal(permissionFor('GET', '/api/messages/x'), 'jobs:admin');
    assert.equal(permissionFor('GET', '/api/audit'), 'jobs:admin');
    assert.equal(permissionFor('POST', '/api/jobs/ord-1/retry'), 'jobs:admin');
    assert.equal(permissionFor('put', '/jobs'), 'jobs:admin');
    assert.equal(permissionFor('GET', '/jobs/ord-1/key-images/1.png'), 'results:read');
  });
});

describe('token configuration', () => {
  it('parses named tokens with their permissions', () => {
    const t = parseNamedTokens('viewer:results:read:aaaaaaaaaaaaaaaaaaaa, feeder:results:read+pacs:write:bbbbbbbbbbbbbbbbbbbb');
    assert.deepEqual(
      t.map((x) => [x.name, x.permissions]),
      [
        ['viewer', ['results:read']],
        ['feeder', ['results:read', 'pacs:write']],
      ],
    );
    assert.deepEqual(parsePermissions('jobs:admin, results:read'), ['jobs:admin', 'results:read']);
  });
  it('names the key and never echoes a token', () => {
    const bad = (env: Record<string, string>, key: string) =>
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && e.key === key && !e.message.includes('cccccccccccccccccccc'),
      );
    bad({ CTGATE_API_TOKENS: 'viewer:results:write:cccccccccccccccccccc' }, 'CTGATE_API_TOKENS');
    bad({ CTGATE_API_TOKENS: 'viewer:results:read:short' }, 'CTGATE_API_TOKENS');
    bad({ CTGATE_API_TOKENS: 'a:results:read:cccccccccccccccccccc,b:jobs:admin:cccccccccccccccccccc' }, 'CTGATE_API_TOKENS');
    bad({ CTGATE_API_TOKEN: 'cccccccccccccccccccc', CTGATE_API_TOKENS: 'a:results:read:cccccccccccccccccccc' }, 'CTGATE_API_TOKENS');
    bad({ CTGATE_API_TOKEN_PERMISSIONS: 'results:read,root' }, 'CTGATE_API_TOKEN_PERMISSIONS');
    bad({ CTGATE_OIDC_ADMIN_ROLE: 'ctgate-admin' }, 'CTGATE_OIDC_ISSUER');
  });
  it('keeps STOW through the proxy off and the API token away from the PACS by default', () => {
    const c = loadConfig({});
    assert.equal(c.access.proxyStow, false);
    assert.deepEqual(c.access.apiTokenPermissions, ['results:read', 'jobs:admin']);
  });
});
