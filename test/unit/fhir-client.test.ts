import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import type { Bundle, Device } from 'fhir/r4.js';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/observability/log.js';
import { authFromConfig } from '../../src/results/fhir/auth.js';
import { FhirSendError, FhirSender } from '../../src/results/fhir/client.js';

const bundle: Bundle = {
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [
    {
      fullUrl: 'urn:uuid:00000000-0000-5000-8000-000000000001',
      resource: { resourceType: 'Device', id: 'd1', status: 'active' } as Device,
      request: { method: 'PUT', url: 'Device/d1' },
    },
  ],
};
const ok = { resourceType: 'Bundle', type: 'transaction-response', entry: [{ response: { status: '200 OK', location: 'Device/d1/_history/1' } }] };

async function stub(replies: [number, unknown][]): Promise<{ url: string; seen: IncomingMessage[]; close(): void }> {
  const seen: IncomingMessage[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push(req);
    req.resume();
    const [status, body] = replies[Math.min(seen.length - 1, replies.length - 1)] as [number, unknown];
    res.writeHead(status, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(body));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`, seen, close: () => server.close() };
}

const oo = (text: string) => ({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', diagnostics: text }] });

describe('FHIR sender', () => {
  it('retries 5xx with backoff, then succeeds; logs carry no server text outside phi', async () => {
    const s = await stub([
      [503, oo('busy, patient MRN000123')],
      [502, oo('gateway')],
      [200, ok],
    ]);
    const lines: string[] = [];
    const sleeps: number[] = [];
    try {
      const sender = new FhirSender({
        baseUrl: s.url,
        auth: authFromConfig({ mode: 'basic', username: 'u', password: 'p' }),
        timeoutMs: 5000,
        retries: 3,
        retryBaseMs: 100,
        log: createLogger('debug', false, (l) => lines.push(l)),
        sleep: async (ms) => {
          sleeps.push(ms);
        },
      });
      const r = await sender.send(bundle, 'job-1');
      assert.equal(r.attempts, 3);
      assert.deepEqual(r.resources, [{ resourceType: 'Device', id: 'd1', status: '200' }]);
      assert.equal(s.seen[0]?.headers.authorization, `Basic ${Buffer.from('u:p').toString('base64')}`);
      assert.ok((sleeps[0] as number) >= 75 && (sleeps[0] as number) <= 125 && (sleeps[1] as number) >= 150 && (sleeps[1] as number) <= 250, sleeps.join());
      assert.ok(!lines.join('\n').includes('MRN000123'));
    } finally {
      s.close();
    }
  });

  it('fails at once on a 4xx with the OperationOutcome text, and after the last retry on 5xx', async () => {
    const s = await stub([[422, oo('Observation.status: unknown code')]]);
    try {
      const sender = new FhirSender({ baseUrl: s.url, auth: authFromConfig({ mode: 'none' }), timeoutMs: 5000, retries: 3, retryBaseMs: 1 });
      const err = await sender.send(bundle).catch((e: unknown) => e);
      assert.ok(err instanceof FhirSendError);
      assert.equal(err.status, 422);
      assert.equal(err.retryable, false);
      assert.match(err.message, /answered 422: error processing Observation\.status: unknown code after 1 attempt$/);
      assert.equal(s.seen.length, 1);
    } finally {
      s.close();
    }
    const down = await stub([[500, oo('down')]]);
    try {
      const sender = new FhirSender({ baseUrl: down.url, auth: authFromConfig({ mode: 'bearer', token: 't' }), timeoutMs: 5000, retries: 2, retryBaseMs: 1 });
      await assert.rejects(sender.send(bundle), (e: unknown) => e instanceof FhirSendError && e.retryable && /after 3 attempts/.test(e.message));
      assert.equal(down.seen.length, 3);
      assert.equal(down.seen[0]?.headers.authorization, 'Bearer t');
    } finally {
      down.close();
    }
  });

  it('retries network errors (connection refused) and says the server is unreachable', async () => {
    const s = await stub([[200, ok]]);
    s.close();
    const sender = new FhirSender({ baseUrl: s.url, auth: authFromConfig({ mode: 'none' }), timeoutMs: 2000, retries: 1, retryBaseMs: 1 });
    await assert.rejects(sender.send(bundle), /FHIR server unreachable .* after 2 attempts/);
  });
});

describe('FHIR config', () => {
  const bad = (env: Record<string, string>, key: RegExp) =>
    assert.throws(
      () => loadConfig(env),
      (e: unknown) => e instanceof ConfigError && key.test(e.message),
    );

  it('is off without a base URL and reads each auth mode', () => {
    assert.equal(loadConfig({}).fhir, undefined);
    const c = loadConfig({ CTGATE_FHIR_BASE_URL: 'https://ehr.example/fhir/', CTGATE_FHIR_AUTH: 'bearer', CTGATE_FHIR_TOKEN: 'abc' });
    assert.deepEqual(c.fhir?.auth, { mode: 'bearer', token: 'abc' });
    assert.equal(c.fhir?.baseUrl, 'https://ehr.example/fhir');
    const smart = loadConfig({
      CTGATE_FHIR_BASE_URL: 'https://ehr.example/fhir',
      CTGATE_FHIR_AUTH: 'smart-backend',
      CTGATE_FHIR_SMART_TOKEN_URL: 'https://ehr.example/token',
      CTGATE_FHIR_SMART_CLIENT_ID: 'ctgate',
      CTGATE_FHIR_SMART_PRIVATE_KEY_FILE: '/etc/ctgate/key.pem',
    });
    assert.deepEqual(smart.fhir?.auth, {
      mode: 'smart-backend',
      tokenUrl: 'https://ehr.example/token',
      clientId: 'ctgate',
      privateKeyFile: '/etc/ctgate/key.pem',
      keyId: undefined,
      scope: 'system/*.write',
    });
  });

  it('names the missing or bad key, never echoing a secret', () => {
    bad({ CTGATE_FHIR_BASE_URL: 'ftp://x' }, /^CTGATE_FHIR_BASE_URL: expected an http\(s\) URL/);
    bad({ CTGATE_FHIR_BASE_URL: 'http://x', CTGATE_FHIR_AUTH: 'kerberos' }, /^CTGATE_FHIR_AUTH: expected one of none, basic, bearer, smart-backend/);
    bad({ CTGATE_FHIR_BASE_URL: 'http://x', CTGATE_FHIR_AUTH: 'basic', CTGATE_FHIR_USERNAME: 'u' }, /^CTGATE_FHIR_PASSWORD: expected a password/);
    bad({ CTGATE_FHIR_BASE_URL: 'http://x', CTGATE_FHIR_AUTH: 'bearer' }, /^CTGATE_FHIR_TOKEN/);
    bad({ CTGATE_FHIR_BASE_URL: 'http://x', CTGATE_FHIR_AUTH: 'smart-backend', CTGATE_FHIR_SMART_TOKEN_URL: 'http://x/t' }, /^CTGATE_FHIR_SMART_CLIENT_ID/);
    bad({ CTGATE_FHIR_AUTH: 'bearer', CTGATE_FHIR_TOKEN: 'abc' }, /^CTGATE_FHIR_BASE_URL/);
    bad({ CTGATE_FHIR_BASE_URL: 'http://x', CTGATE_FHIR_RETRIES: '-1' }, /^CTGATE_FHIR_RETRIES/);
  });
});
