import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, requireApiToken } from '../../src/config/index.js';

const throwsKey = (env: Record<string, string>, key: RegExp) =>
  assert.throws(
    () => loadConfig(env),
    (e: unknown) => e instanceof ConfigError && key.test(e.message),
  );

describe('config', () => {
  it('has the contract defaults', () => {
    const c = loadConfig({});
    assert.equal(c.redisUrl, 'redis://127.0.0.1:6379');
    assert.equal(c.mllp.port, 2575);
    assert.equal(c.httpPort, 8080);
    assert.equal(c.logPhi, false);
    assert.equal(c.apiToken, undefined);
    assert.equal(c.redisRequireAof, true, 'serve refuses a Redis without AOF unless opted out');
    assert.equal(c.hl7ReasonValues, false, 'NAK reasons quote no message text unless asked');
  });

  it('takes the Redis persistence opt-out and the HL7 reason values as booleans', () => {
    assert.equal(loadConfig({ CTGATE_REDIS_REQUIRE_AOF: 'false' }).redisRequireAof, false);
    assert.equal(loadConfig({ CTGATE_HL7_REASON_VALUES: 'on' }).hl7ReasonValues, true);
    throwsKey({ CTGATE_REDIS_REQUIRE_AOF: 'nope' }, /^CTGATE_REDIS_REQUIRE_AOF: expected true or false/);
    throwsKey({ CTGATE_HL7_REASON_VALUES: 'sometimes' }, /^CTGATE_HL7_REASON_VALUES: expected true or false/);
  });

  it('names the bad key and what it expected', () => {
    throwsKey({ CTGATE_MLLP_PORT: 'abc' }, /^CTGATE_MLLP_PORT: expected an integer 0\.\.65535, got "abc"$/);
    throwsKey({ CTGATE_HTTP_PORT: '70000' }, /CTGATE_HTTP_PORT/);
    throwsKey({ CTGATE_REDIS_URL: 'http://x' }, /CTGATE_REDIS_URL: expected a redis:\/\//);
    throwsKey({ CTGATE_LOG_PHI: 'maybe' }, /CTGATE_LOG_PHI: expected true or false/);
    throwsKey({ CTGATE_API_TOKEN: 'short' }, /CTGATE_API_TOKEN: expected a token of at least 16/);
    throwsKey({ CTGATE_MLLP_ALLOW_IPS: '10.0.0.0/8,not an ip' }, /CTGATE_MLLP_ALLOW_IPS/);
    throwsKey({ CTGATE_MLLP_TLS_CERT_FILE: '/x.pem' }, /CTGATE_MLLP_TLS_KEY_FILE/);
  });

  it('takes the sessions, the sign-in limits and the HTTP server limits, each checked by name', () => {
    const c = loadConfig({});
    assert.deepEqual(c.sessions, { ttlSeconds: 28800, idleSeconds: 3600 });
    assert.deepEqual(c.authFailures, { limit: 20, windowSeconds: 300 });
    assert.deepEqual(c.httpServer, { requestTimeoutMs: 1_800_000, headersTimeoutMs: 20_000, maxConnections: 1024 });
    assert.equal(c.trustProxy, false);
    const set = loadConfig({
      CTGATE_SESSION_TTL_S: '7200',
      CTGATE_SESSION_IDLE_S: '900',
      CTGATE_AUTH_FAIL_LIMIT: '5',
      CTGATE_AUTH_FAIL_WINDOW_S: '60',
      CTGATE_HTTP_REQUEST_TIMEOUT_MS: '600000',
      CTGATE_HTTP_HEADERS_TIMEOUT_MS: '10000',
      CTGATE_HTTP_MAX_CONNECTIONS: '50',
      CTGATE_TRUST_PROXY: 'true',
    });
    assert.deepEqual(set.sessions, { ttlSeconds: 7200, idleSeconds: 900 });
    assert.deepEqual(set.authFailures, { limit: 5, windowSeconds: 60 });
    assert.deepEqual(set.httpServer, { requestTimeoutMs: 600_000, headersTimeoutMs: 10_000, maxConnections: 50 });
    assert.equal(set.trustProxy, true);
    throwsKey({ CTGATE_SESSION_TTL_S: '10' }, /^CTGATE_SESSION_TTL_S: expected an integer 60\.\./);
    throwsKey({ CTGATE_SESSION_TTL_S: '3600', CTGATE_SESSION_IDLE_S: '7200' }, /^CTGATE_SESSION_IDLE_S: expected at most CTGATE_SESSION_TTL_S/);
    throwsKey({ CTGATE_AUTH_FAIL_LIMIT: '0' }, /^CTGATE_AUTH_FAIL_LIMIT: expected an integer 1\.\./);
    throwsKey({ CTGATE_AUTH_FAIL_WINDOW_S: 'x' }, /^CTGATE_AUTH_FAIL_WINDOW_S: expected an integer/);
    throwsKey({ CTGATE_HTTP_MAX_CONNECTIONS: '-1' }, /^CTGATE_HTTP_MAX_CONNECTIONS: expected an integer/);
    throwsKey({ CTGATE_HTTP_REQUEST_TIMEOUT_MS: '10000', CTGATE_HTTP_HEADERS_TIMEOUT_MS: '20000' }, /^CTGATE_HTTP_HEADERS_TIMEOUT_MS: expected at most/);
    throwsKey({ CTGATE_TRUST_PROXY: 'maybe' }, /^CTGATE_TRUST_PROXY: expected true or false/);
  });

  it('does not echo a rejected token', () => {
    try {
      loadConfig({ CTGATE_API_TOKEN: 'secret' });
      assert.fail('should throw');
    } catch (e) {
      assert.ok(!(e as Error).message.includes('secret'));
    }
  });

  it('reads a config file and lets the environment override it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctgate-cfg-'));
    const file = join(dir, 'ctgate.yaml');
    writeFileSync(file, 'mllpPort: 3000\nhttpPort: 9000\nmllpAllowIps: [10.0.0.0/8, 127.0.0.1]\n');
    const c = loadConfig({ CTGATE_CONFIG_FILE: file, CTGATE_HTTP_PORT: '9100' });
    assert.equal(c.mllp.port, 3000);
    assert.equal(c.httpPort, 9100);
    assert.deepEqual(c.mllp.allowIps, ['10.0.0.0/8', '127.0.0.1']);
    writeFileSync(file, 'mllpPrt: 3000\n');
    assert.throws(() => loadConfig({ CTGATE_CONFIG_FILE: file }), /mllpPrt/);
  });

  it('refuses to serve HTTP without a token', () => {
    assert.throws(() => requireApiToken(loadConfig({})), /CTGATE_API_TOKEN/);
  });
});
