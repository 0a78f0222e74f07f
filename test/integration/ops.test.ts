/**
 * Operations against real peers: /ready with Redis, Orthanc (DICOMweb, with a login) and the model files; /metrics
 * after orders over MLLP (python-hl7's mllp_send) and after a worker ran a job through the trained models; the
 * admin job API (checkpoint, retry of a failed job).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { type RunningWorker, startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { jobIdFor } from '../../src/domain/job.js';
import { loadManifest } from '../../src/inference/manifest.js';
import { silentLogger } from '../../src/observability/log.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { ackField, mllpSend, orm } from '../helpers/hl7.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { REDIS_URL } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';

const PACS_USER = 'ctgate';
const PACS_PASSWORD = 'pacs-secret-4f1d9c';
const auth = { Authorization: `Bearer ${TEST_TOKEN}` };

/** The value of one sample line of an exposition, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A copy of the models manifest whose file paths are absolute; `lesionSha` replaces the lesion model's sha256. */
function manifestCopy(dir: string, lesionSha?: string): string {
  const doc = JSON.parse(readFileSync('models/manifest.json', 'utf8')) as { models: { task: string; file?: string; sha256?: string }[] };
  for (const m of doc.models) {
    if (m.file) m.file = resolve('models', m.file);
    if (lesionSha && m.task === 'lesion-segmentation') m.sha256 = lesionSha;
  }
  const file = join(dir, 'manifest.json');
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

describe('operations: /ready, /metrics, job progress and retry (Redis, Orthanc, MLLP, worker)', () => {
  const orthanc = new TestOrthanc({ user: PACS_USER, password: PACS_PASSWORD });
  let gw: TestGateway;
  let http: ReturnType<typeof request>;
  const pacsEnv = () => ({ CTGATE_PACS_URL: orthanc.dicomweb, CTGATE_PACS_USER: PACS_USER, CTGATE_PACS_PASSWORD: PACS_PASSWORD });
  let completedJob = '';
  let failedJob = '';
  let failedJob2 = '';

  before(async () => {
    await orthanc.start();
    gw = await startTestGateway(pacsEnv());
    http = request(`http://127.0.0.1:${gw.httpPort}`);
  });

  after(async () => {
    await gw?.cleanup();
    await orthanc.stop();
  });

  it('/ready: 200 with Redis, the PACS and the model files in order, FHIR not configured; no credentials or URLs', async () => {
    // The two probes are open (README: CTGATE_API_TOKEN); everything else needs the token.
    const r = await http.get('/ready');
    assert.equal((await http.get('/health')).status, 200);
    assert.equal((await http.get('/api/jobs')).status, 401);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.status, 'ready');
    assert.deepEqual(r.body.failed, []);
    const c = r.body.checks;
    for (const name of ['redis', 'pacs', 'models']) {
      assert.equal(c[name].status, 'ok', name);
      assert.equal(typeof c[name].latencyMs, 'number', name);
    }
    assert.equal(c.fhir.status, 'not configured');
    assert.deepEqual(c.models.models, (await loadManifest('models/manifest.json')).modelIds);
    const text = JSON.stringify(r.body);
    assert.doesNotMatch(text, new RegExp(`${PACS_PASSWORD}|127\\.0\\.0\\.1|${orthanc.port}|dicom-web|/models/`));
    // The second call does not hash the models again.
    assert.equal((await http.get('/ready')).body.checks.models.cached, true);
  });

  it('/ready: 503 naming the PACS and FHIR server that do not answer and the model whose sha256 differs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctgate-ops-'));
    const manifest = manifestCopy(dir, 'a'.repeat(64));
    const closed = await freePort();
    const bad = await startTestGateway({
      CTGATE_PACS_URL: `http://127.0.0.1:${closed}/dicom-web`,
      CTGATE_PACS_USER: PACS_USER,
      CTGATE_PACS_PASSWORD: PACS_PASSWORD,
      CTGATE_FHIR_BASE_URL: `http://127.0.0.1:${closed}/fhir`,
      CTGATE_MODELS_MANIFEST: manifest,
      CTGATE_METRICS_OPEN: 'true',
    });
    try {
      const h = request(`http://127.0.0.1:${bad.httpPort}`);
      const r = await h.get('/ready');
      assert.equal(r.status, 503);
      assert.equal(r.body.status, 'not ready');
      assert.deepEqual(r.body.failed, ['pacs', 'fhir', 'models']);
      assert.equal(r.body.checks.redis.status, 'ok');
      assert.equal(r.body.checks.pacs.error, 'connection refused');
      assert.equal(r.body.checks.fhir.error, 'connection refused');
      const lesionId = (await loadManifest('models/manifest.json')).modelIds[1];
      assert.equal(r.body.checks.models.error, `${lesionId}: sha256 differs from the manifest`);
      assert.doesNotMatch(JSON.stringify(r.body), new RegExp(`${PACS_PASSWORD}|${closed}|${dir}`));
      // The manifest fixed (new mtime): verified again, and ok.
      manifestCopy(dir);
      const fixed = await h.get('/ready');
      assert.equal(fixed.body.checks.models.status, 'ok');
      assert.equal(fixed.body.checks.models.cached, false);
      // CTGATE_METRICS_OPEN=true: no token needed.
      assert.equal((await h.get('/metrics')).status, 200);
    } finally {
      await bad.cleanup();
    }
  });

  it('/metrics: needs the token; counts orders received and ACKed, and jobs by state', async () => {
    assert.equal((await http.get('/metrics')).status, 401);
    assert.equal((await http.get('/metrics').set('Authorization', 'Bearer wrong-token-0123456789')).status, 401);
    const acks = await mllpSend(gw.mllp.port, [orm({ controlId: 'M-1', placer: 'PL-M1' }), orm({ controlId: 'M-2', placer: 'PL-M2' })]);
    assert.deepEqual(
      acks.map((a) => ackField(a, 'MSA', 1)),
      ['AA', 'AA'],
    );
    const r = await http.get('/metrics').set(auth);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    const text = r.text;
    assert.equal(sample(text, 'ctgate_orders_received_total'), 2);
    assert.equal(sample(text, 'ctgate_orders_acked_total{code="AA"}'), 2);
    assert.equal(sample(text, 'ctgate_orders_acked_total{code="AE"}'), 0);
    assert.equal(sample(text, 'ctgate_orders_nak_total{class="reject"}'), 0);
    assert.equal(sample(text, 'ctgate_queue_jobs{state="waiting"}'), 2);
    assert.equal(sample(text, 'ctgate_redis_up'), 1);
    assert.match(text, /^# TYPE ctgate_stage_duration_seconds histogram$/m);
    // These orders have no study in the PACS: take them out before a worker runs.
    for (const placer of ['PL-M1', 'PL-M2']) await (await gw.queue.getJob(jobIdFor({ application: 'EPIC', facility: 'GENHOSP' }, placer)))?.remove();
  });

  it('/metrics after a worker ran a job: stage histograms, model time, a completion by verdict, a failure by stage', async () => {
    const p = generateChestCt({ seed: 601, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, { seed: 601, accessionNumber: 'ACC-OPS1', patientId: 'MRN000123', seriesDescription: 'synthetic covid' });
    await orthanc.client().store(series.files.map((f) => f.bytes));
    const worker: RunningWorker = await startWorker(
      loadConfig({
        CTGATE_REDIS_URL: REDIS_URL,
        CTGATE_REDIS_PREFIX: gw.prefix,
        ...pacsEnv(),
        CTGATE_STUDY_POLL_MS: '200',
        CTGATE_STUDY_STABLE_MS: '300',
        CTGATE_STUDY_CHECK_MS: '1000',
        CTGATE_STUDY_SLEEP_MS: '500',
        CTGATE_STUDY_DEADLINE_MINUTES: '1',
        CTGATE_WORKER_CONCURRENCY: '2',
        CTGATE_MODEL_THREADS: '2',
        CTGATE_LOG_LEVEL: 'error',
      }),
      silentLogger,
    );
    try {
      const order = sampleOrder({ accessionNumber: 'ACC-OPS1', placerOrderNumber: 'PLC-OPS1' });
      completedJob = jobIdFor(order.sender, 'PLC-OPS1');
      await gw.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: 'MSG-OPS1' }, { jobId: completedJob });
      // A study that never arrives: received 59 s ago, the one-minute deadline passes during the first check.
      const never = sampleOrder({ accessionNumber: 'ACC-OPS-NEVER', placerOrderNumber: 'PLC-OPS2' });
      failedJob = jobIdFor(never.sender, 'PLC-OPS2');
      await gw.queue.add(
        'screen',
        { order: never, receivedAt: new Date(Date.now() - 59_000).toISOString(), messageControlId: 'MSG-OPS2' },
        { jobId: failedJob },
      );
      const never2 = sampleOrder({ accessionNumber: 'ACC-OPS-NEVER2', placerOrderNumber: 'PLC-OPS3' });
      failedJob2 = jobIdFor(never2.sender, 'PLC-OPS3');
      await gw.queue.add(
        'screen',
        { order: never2, receivedAt: new Date(Date.now() - 59_000).toISOString(), messageControlId: 'MSG-OPS3' },
        { jobId: failedJob2 },
      );
      const deadline = Date.now() + 90_000;
      for (;;) {
        const [a, b, c] = await Promise.all([gw.queue.getJobState(completedJob), gw.queue.getJobState(failedJob), gw.queue.getJobState(failedJob2)]);
        if ((a === 'completed' || a === 'failed') && b === 'failed' && c === 'failed') {
          assert.equal(a, 'completed', JSON.stringify(await gw.queue.getJob(completedJob).then((j) => j?.failedReason)));
          break;
        }
        if (Date.now() > deadline) throw new Error(`jobs still ${a} / ${b} / ${c}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await worker.stop(); // flushes the worker's metrics
    }
    const text = (await http.get('/metrics').set(auth)).text;
    for (const stage of ['wait-for-study', 'retrieve', 'analyze', 'write-seg', 'write-fhir', 'send-oru']) {
      assert.equal(sample(text, `ctgate_stage_duration_seconds_count{stage="${stage}"}`), 1, stage);
      assert.equal(sample(text, `ctgate_stage_duration_seconds_bucket{stage="${stage}",le="+Inf"}`), 1, stage);
    }
    const analyzeSum = sample(text, 'ctgate_stage_duration_seconds_sum{stage="analyze"}') ?? 0;
    assert.ok(analyzeSum > 0, 'the analysis took some time');
    assert.equal(sample(text, 'ctgate_model_duration_seconds_count{provider="cpu"}'), 1);
    assert.ok((sample(text, 'ctgate_model_duration_seconds_sum{provider="cpu"}') ?? 0) <= analyzeSum);
    assert.equal(sample(text, 'ctgate_jobs_completed_total{verdict="positive"}'), 1);
    assert.equal(sample(text, 'ctgate_jobs_failed_total{stage="wait-for-study"}'), 2);
    assert.equal(sample(text, 'ctgate_stage_errors_total{stage="wait-for-study",peer="internal",retryable="false"}'), 2);
    assert.equal(sample(text, 'ctgate_queue_jobs{state="completed"}'), 1);
    assert.equal(sample(text, 'ctgate_queue_jobs{state="failed"}'), 2);
  });

  it('GET /api/jobs/:id/progress: the checkpoint, without patient data; 401 without the token, 404 for an unknown job', async () => {
    assert.equal((await http.get(`/api/jobs/${completedJob}/progress`)).status, 401);
    const r = await http.get(`/api/jobs/${completedJob}/progress`).set(auth);
    assert.equal(r.status, 200);
    assert.equal(r.body.queueState, 'completed');
    assert.equal(r.body.checkpoint.stage, 'done');
    assert.equal(r.body.checkpoint.outputs.analyze.verdict, 'positive');
    assert.equal(r.body.progress.percent, 100);
    assert.doesNotMatch(JSON.stringify(r.body), /MRN000123|Synthetic|1970-01-01/);
    const missing = await http.get('/api/jobs/ord-none/progress').set(auth);
    assert.equal(missing.status, 404);
    assert.match(missing.body.error, /no job ord-none/);
    // app.ts's own job route still answers beside this router.
    assert.equal((await http.get(`/api/jobs/${completedJob}`).set(auth)).body.state, 'completed');
  });

  it('POST /api/jobs/:id/retry: a failed job goes back to the queue; 409 for a job not failed, 404 for an unknown one', async () => {
    assert.equal((await http.post(`/api/jobs/${failedJob}/retry`)).status, 401);
    const before = await gw.queue.getJob(failedJob);
    const r = await http.post(`/api/jobs/${failedJob}/retry`).set(auth);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.retried, true);
    assert.equal(r.body.stage, 'wait-for-study');
    assert.equal(r.body.deadlineRestarted, true);
    assert.ok(['waiting', 'active', 'prioritized'].includes(r.body.state), r.body.state);
    assert.ok(['waiting', 'active', 'prioritized'].includes(await gw.queue.getJobState(failedJob)));
    const after = await gw.queue.getJob(failedJob);
    assert.ok(Date.parse(after?.data.receivedAt ?? '') > Date.parse(before?.data.receivedAt ?? ''), 'the study deadline counts from the retry');
    const again = await http.post(`/api/jobs/${failedJob}/retry?from=start`).set(auth);
    assert.equal(again.status, 409);
    assert.match(again.body.error, /is (waiting|active|prioritized); only a failed job can be retried/);
    assert.equal((await http.post(`/api/jobs/${completedJob}/retry`).set(auth)).status, 409);
    assert.equal((await http.post(`/api/jobs/${failedJob}/retry?from=middle`).set(auth)).status, 400);
    const unknown = await http.post('/api/jobs/ord-none/retry').set(auth);
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.error, /no job ord-none/);
  });

  it('POST /api/jobs/:id/retry?from=start drops the checkpoint first', async () => {
    assert.equal((await http.get(`/api/jobs/${failedJob2}/progress`).set(auth)).body.checkpoint.stage, 'wait-for-study');
    const r = await http.post(`/api/jobs/${failedJob2}/retry?from=start`).set(auth);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.from, 'start');
    const progress = await http.get(`/api/jobs/${failedJob2}/progress`).set(auth);
    assert.equal(progress.body.checkpoint, null);
    assert.ok(['waiting', 'active', 'prioritized'].includes(progress.body.queueState));
  });
});
