import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { ackField, mllpSend, orm } from '../helpers/hl7.js';

describe('HTTP API: health, auth, dead letters, replay after a mappings fix', () => {
  let gw: TestGateway;
  let mappingsFile: string;
  let http: ReturnType<typeof request>;
  const auth = { Authorization: `Bearer ${TEST_TOKEN}` };
  before(async () => {
    mappingsFile = join(mkdtempSync(join(tmpdir(), 'ctgate-map-')), 'orders.yaml');
    // Start with a mappings file that does not yet allow the facility below.
    writeFileSync(mappingsFile, readFileSync('mappings/orders.yaml', 'utf8').replace('allowedFacilities: ["*"]', 'allowedFacilities: ["GENHOSP"]'));
    gw = await startTestGateway({ CTGATE_MAPPINGS_FILE: mappingsFile });
    http = request(`http://127.0.0.1:${gw.httpPort}`);
  });
  after(async () => {
    await gw.cleanup();
  });

  it('serves /health without a token and reports Redis', async () => {
    const r = await http.get('/health');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: 'ok', redis: 'up' });
  });

  it('refuses the API without the right bearer token', async () => {
    assert.equal((await http.get('/api/jobs')).status, 401);
    assert.equal((await http.get('/api/jobs').set('Authorization', 'Bearer wrong-token-0123456789')).status, 401);
    assert.equal((await http.get('/api/messages').set('Authorization', TEST_TOKEN)).status, 401);
    assert.equal((await http.post('/api/mappings/reload')).status, 401);
  });

  it('lists queued jobs without patient data', async () => {
    await mllpSend(gw.mllp.port, [orm({ controlId: 'H-1', placer: 'PL-H1' })]);
    const r = await http.get('/api/jobs').set(auth);
    assert.equal(r.status, 200);
    assert.equal(r.body.counts.waiting, 1);
    assert.equal(r.body.items[0].procedure, '71250');
    assert.doesNotMatch(JSON.stringify(r.body), /MRN0001|PATIENT/);
    const detail = await http.get(`/api/jobs/${r.body.items[0].id}`).set(auth);
    assert.equal(detail.body.order.placerOrderNumber, 'PL-H1');
    assert.equal((await http.get('/api/jobs?state=bogus').set(auth)).status, 400);
    assert.equal((await http.get('/api/jobs/ord-none').set(auth)).status, 404);
  });

  it('dead-letters a rejected message, then replays it once the mappings allow its facility', async () => {
    const [ack] = await mllpSend(gw.mllp.port, [orm({ controlId: 'OTHER-1', placer: 'PL-OTHER', facility: 'OTHERHOSP' })]);
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
    const list = await http.get('/api/messages?kind=dead-letter').set(auth);
    assert.equal(list.status, 200);
    const entry = list.body.items.find((i: { controlId: string }) => i.controlId === 'OTHER-1');
    assert.ok(entry);
    assert.match(entry.reason, /not in allowedFacilities/);
    assert.equal(entry.raw, undefined);
    assert.doesNotMatch(JSON.stringify(list.body), /MRN0001|PATIENT/, 'list view carries no PHI');
    const detail = await http.get(`/api/messages/${entry.id}`).set(auth);
    assert.match(detail.body.raw, /^MSH\|/);

    const still = await http.post(`/api/messages/${entry.id}/replay`).set(auth);
    assert.equal(still.body.ackCode, 'AR', 'replay before the fix is rejected again');

    writeFileSync(mappingsFile, 'allowedFacilities: [oops\n');
    const bad = await http.post('/api/mappings/reload').set(auth);
    assert.equal(bad.status, 400);
    assert.match(JSON.stringify(bad.body.problems), /not valid YAML/);

    writeFileSync(mappingsFile, readFileSync('mappings/orders.yaml', 'utf8'));
    assert.equal((await http.post('/api/mappings/reload').set(auth)).status, 200);
    const replay = await http.post(`/api/messages/${entry.id}/replay`).set(auth);
    assert.equal(replay.status, 200);
    assert.equal(replay.body.ackCode, 'AA');
    assert.equal(replay.body.outcome, 'queued');
    const jobs = await gw.queue.getJobs(['waiting'], 0, -1);
    assert.ok(jobs.some((j) => j.data.order.placerOrderNumber === 'PL-OTHER'));
    const after = await http.get(`/api/messages/${entry.id}`).set(auth);
    assert.deepEqual(
      after.body.replays.map((r: { ackCode: string }) => r.ackCode),
      ['AR', 'AA'],
    );
    const again = await http.get('/api/messages?kind=dead-letter').set(auth);
    assert.equal(again.body.items.filter((i: { controlId: string }) => i.controlId === 'OTHER-1').length, 1, 'replays add no new dead letters');
  });

  it('reports 503 on /health when Redis is unreachable', async () => {
    const down = await startTestGateway({ CTGATE_REDIS_URL: 'redis://127.0.0.1:1' }, { skipRedisCheck: true });
    try {
      const r = await request(`http://127.0.0.1:${down.httpPort}`).get('/health');
      assert.equal(r.status, 503);
      assert.equal(r.body.redis, 'down');
    } finally {
      await down.cleanup();
    }
  });
});
