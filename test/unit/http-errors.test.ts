/**
 * Unexpected errors: a browser asking for a page gets an HTML error page (with the pages' security headers), the
 * API and the proxy answer JSON, and neither shows the internal message.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import request from 'supertest';
import type { Config } from '../../src/config/index.js';
import { createApp, type HttpDeps } from '../../src/http/app.js';
import { silentLogger } from '../../src/observability/log.js';

const TOKEN = 'http-errors-token-0123456789';

function appWithBrokenQueue() {
  const broken = async () => {
    throw new Error('ECONNRESET 10.0.0.5:6379 secret detail');
  };
  const deps = {
    config: { publicUrl: 'http://127.0.0.1:8080', worker: { modelsManifest: 'models/manifest.json' } } as Config,
    apiToken: TOKEN,
    log: silentLogger,
    queue: { getJobs: broken, getJobCounts: broken, getJob: broken },
    states: { get: broken, getMany: broken, getAnalysis: broken },
    store: { getOrder: broken },
    redis: { ping: broken },
  } as unknown as HttpDeps;
  return createApp(deps).callback();
}

describe('unexpected errors over HTTP', () => {
  it('shows a browser an HTML error page without the internal message', async () => {
    const res = await request(appWithBrokenQueue()).get('/jobs').set('Accept', 'text/html').set('Authorization', `Bearer ${TOKEN}`);
    assert.equal(res.status, 500);
    assert.match(res.headers['content-type'] ?? '', /text\/html/);
    assert.match(res.text, /Something went wrong on the server/);
    assert.doesNotMatch(res.text, /ECONNRESET|secret/);
    assert.match(res.headers['content-security-policy'] ?? '', /default-src 'none'/);
  });

  it('answers the API in JSON, also without the internal message', async () => {
    const res = await request(appWithBrokenQueue()).get('/api/jobs').set('Accept', 'text/html').set('Authorization', `Bearer ${TOKEN}`);
    assert.equal(res.status, 500);
    assert.deepEqual(res.body, { error: 'internal error' });
  });
});
