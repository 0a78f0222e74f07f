/**
 * The screening job end to end with real peers: Redis (BullMQ), Orthanc with DICOMweb (study in, SEG out), the
 * trained models, python-hl7's MLLP server as the EMR receiving the ORU. Also: a worker SIGKILLed mid-job is
 * replaced by one that resumes at the checkpointed stage (the analysis is not run twice); a cancel stops a job at
 * the next stage boundary; a study that never arrives fails visibly with the reason.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { loadManifest } from '../../src/inference/manifest.js';
import { JobStateStore } from '../../src/jobs/job-state.js';
import { jobIdFor, type ScreeningJobData } from '../../src/jobs/queue.js';
import { silentLogger } from '../../src/observability/log.js';
import type { OrderRecord } from '../../src/orders/store.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';

const QUEUE = 'screening';

describe('screening worker (Redis, Orthanc, models, python-hl7 receiver)', () => {
  const orthanc = new TestOrthanc();
  const fhir = new TestFhirServer();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let redis: Redis;
  let queue: Queue<ScreeningJobData>;
  let states: JobStateStore;
  let rx: Receiver;
  let oruPort = 0;
  const children = new Set<ChildProcess>();

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    CTGATE_REDIS_URL: REDIS_URL,
    CTGATE_REDIS_PREFIX: prefix,
    CTGATE_PACS_URL: orthanc.dicomweb,
    CTGATE_FHIR_BASE_URL: fhir.url,
    CTGATE_ORU_HOST: '127.0.0.1',
    CTGATE_ORU_PORT: String(oruPort),
    CTGATE_ORU_RETRIES: '0',
    CTGATE_ORU_CONNECT_TIMEOUT_MS: '500',
    CTGATE_STUDY_POLL_MS: '200',
    CTGATE_STUDY_STABLE_MS: '300',
    CTGATE_STUDY_CHECK_MS: '5000',
    CTGATE_STUDY_SLEEP_MS: '500',
    CTGATE_STAGE_BACKOFF_MS: '300',
    CTGATE_STAGE_BACKOFF_MAX_MS: '1000',
    CTGATE_STAGE_ATTEMPTS: '20',
    CTGATE_MODEL_THREADS: '2',
    CTGATE_LOG_LEVEL: 'error',
    ...extra,
  });

  async function uploadStudy(seed: number, kind: 'covid' | 'healthy', accession: string) {
    const p = generateChestCt({ seed, kind, size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, { seed, accessionNumber: accession, patientId: 'MRN000123', seriesDescription: `synthetic ${kind}` });
    await orthanc.client().store(series.files.map((f) => f.bytes));
    return series;
  }

  async function addJob(accession: string, placer: string): Promise<string> {
    const order = sampleOrder({ accessionNumber: accession, placerOrderNumber: placer });
    const jobId = jobIdFor(order.sender, placer);
    await queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: `MSG-${placer}` }, { jobId, attempts: 3 });
    return jobId;
  }

  async function waitForJob(jobId: string, until: (state: string) => boolean, ms = 120_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await queue.getJobState(jobId);
      if (until(s)) return s;
      if (Date.now() > deadline) throw new Error(`job ${jobId} still ${s}; checkpoint ${JSON.stringify(await states.get(jobId))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  before(async () => {
    await requireRedis();
    await Promise.all([orthanc.start(), fhir.start()]);
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    queue = new Queue<ScreeningJobData>(QUEUE, { connection: redis, prefix: `${prefix}:bull` });
    states = new JobStateStore(redis, prefix, 1);
    rx = await startReceiver();
    oruPort = rx.port;
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const p of running) p.kill('SIGTERM');
    await queue?.close();
    redis?.disconnect();
    await orthanc.stop();
    await fhir.stop();
    await deleteKeys(prefix);
  });

  it('runs an order from the study in the PACS to SEG, ORU and a positive verdict', async () => {
    const series = await uploadStudy(501, 'covid', 'ACC-W1');
    const worker = await startWorker(loadConfig(env()), silentLogger);
    try {
      const jobId = await addJob('ACC-W1', 'PLC-W1');
      assert.equal(await waitForJob(jobId, (s) => s === 'completed' || s === 'failed'), 'completed', JSON.stringify(await states.get(jobId)));
      const job = await queue.getJob(jobId);
      const r = job?.returnvalue;
      assert.equal(r?.status, 'completed');
      assert.equal(r?.verdict, 'positive');
      assert.equal(r?.studyInstanceUid, series.studyInstanceUid);
      assert.ok(r?.segSeriesInstanceUid, 'a SEG series');
      assert.equal(r?.oruAckCode, 'AA');
      assert.deepEqual(r?.models, (await loadManifest('models/manifest.json')).modelIds);
      // The SEG is in the study, once.
      const segs = (await orthanc.client().searchSeries(series.studyInstanceUid, { Modality: 'SEG' })).length;
      assert.equal(segs, 1);
      // Beside the CT and the SEG, one series of key images (secondary captures, Modality OT) for viewers without SEG.
      const all = await orthanc.client().searchSeries(series.studyInstanceUid);
      const modalities = all.map((s) => str(s, TAG.Modality)).sort();
      assert.deepEqual(modalities, ['CT', 'OT', 'SEG', 'SR']);
      const keySeries = all.find((s) => str(s, TAG.Modality) === 'OT');
      assert.match(str(keySeries ?? {}, TAG.SeriesDescription) ?? '', /NOT FOR CLINICAL USE/);
      const segOut = (await states.get(jobId))?.outputs['write-seg'];
      assert.ok(segOut && 'keyImageSeriesInstanceUid' in segOut, JSON.stringify(segOut));
      assert.equal(segOut.keyImageSeriesInstanceUid, str(keySeries ?? {}, TAG.SeriesInstanceUID));
      const keyInstances = await orthanc.client().searchInstances(series.studyInstanceUid, segOut.keyImageSeriesInstanceUid as string);
      assert.equal(keyInstances.length, segOut.keyImages);
      assert.ok(keyInstances.length >= 1);
      // And one measurement report (TID 1500 SR), one instance, whose series the write-seg output names.
      const srSeries = await orthanc.client().searchSeries(series.studyInstanceUid, { Modality: 'SR' });
      assert.equal(srSeries.length, 1);
      assert.match(str(srSeries[0] ?? {}, TAG.SeriesDescription) ?? '', /NOT FOR CLINICAL USE/);
      assert.ok(segOut.srSeriesInstanceUid, JSON.stringify(segOut));
      assert.equal(segOut.srSeriesInstanceUid, str(srSeries[0] ?? {}, TAG.SeriesInstanceUID));
      assert.equal((await orthanc.client().searchInstances(series.studyInstanceUid, segOut.srSeriesInstanceUid)).length, 1);
      // The EMR got exactly one ORU for this job, carrying the accession number.
      const orus = rx.received().filter((m) => m.toString().includes('ACC-W1'));
      assert.equal(orus.length, 1);
      assert.match(orus[0]?.toString() ?? '', /ORU\^R01/);
      // Every stage ran once and left a timing; progress reached 100 %.
      const st = await states.get(jobId);
      assert.equal(st?.stage, 'done');
      for (const s of ['retrieve', 'analyze', 'write-seg', 'send-oru'] as const) assert.equal(st?.attempts[s], 1, s);
      assert.equal((job?.progress as { percent?: number } | undefined)?.percent, 100);
      // The DiagnosticReport is readable in the FHIR server, preliminary, pointing at the study's ImagingStudy.
      assert.ok(r?.diagnosticReportId);
      const report = (await (await fetch(`${fhir.url}/DiagnosticReport/${r?.diagnosticReportId}`)).json()) as {
        status: string;
        conclusion: string;
        imagingStudy?: unknown[];
        result?: unknown[];
      };
      assert.equal(report.status, 'preliminary');
      assert.match(report.conclusion, /not for clinical use/i);
      assert.equal(report.imagingStudy?.length, 1);
      assert.ok((report.result?.length ?? 0) >= 3);
    } finally {
      await worker.stop();
    }
  });

  it('resumes at the checkpointed stage after the worker is SIGKILLed (the analysis is not run again)', async () => {
    // The EMR is down: the job reaches send-oru and keeps retrying there; the worker process is killed then.
    const downPort = await freePort();
    const series = await uploadStudy(502, 'covid', 'ACC-W2');
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], {
      env: { ...process.env, ...env({ CTGATE_ORU_PORT: String(downPort) }) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr = (stderr + d).slice(-4000);
    });
    const jobId = await addJob('ACC-W2', 'PLC-W2');
    const deadline = Date.now() + 120_000;
    for (;;) {
      const st = await states.get(jobId);
      if (st?.stage === 'send-oru' && (st.attempts['send-oru'] ?? 0) >= 1 && st.lastError) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`job did not reach send-oru: ${JSON.stringify(st)} ${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    child.kill('SIGKILL');
    await once(child, 'exit');
    children.delete(child);

    // The EMR comes back on that port; a new worker takes the job over (after its lock expires) and finishes it.
    const rx2 = await startReceiver({ port: downPort });
    const worker = await startWorker(loadConfig(env({ CTGATE_ORU_PORT: String(downPort) })), silentLogger);
    try {
      assert.equal(await waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 150_000), 'completed');
      const st = await states.get(jobId);
      assert.equal(st?.attempts.analyze, 1, 'the analysis ran once');
      assert.equal(st?.attempts['write-seg'], 1, 'the SEG was written once');
      assert.ok((st?.attempts['send-oru'] ?? 0) >= 2);
      assert.equal(rx2.received().length, 1);
      assert.equal((await orthanc.client().searchSeries(series.studyInstanceUid, { Modality: 'SEG' })).length, 1);
    } finally {
      await worker.stop();
      await rx2.stop();
    }
  });

  it('stops a job whose order was cancelled at the next stage boundary', async () => {
    const order = sampleOrder({ accessionNumber: 'ACC-W3', placerOrderNumber: 'PLC-W3' });
    const jobId = jobIdFor(order.sender, 'PLC-W3');
    const at = new Date().toISOString();
    const record: OrderRecord = { jobId, status: 'cancel-requested', order, createdAt: at, updatedAt: at, history: [] };
    await redis.set(`${prefix}:order:${jobId}`, JSON.stringify(record));
    const worker = await startWorker(loadConfig(env()), silentLogger);
    try {
      await queue.add('screen', { order, receivedAt: at, messageControlId: 'MSG-W3' }, { jobId });
      assert.equal(await waitForJob(jobId, (s) => s === 'completed' || s === 'failed'), 'completed');
      assert.equal((await queue.getJob(jobId))?.returnvalue.status, 'cancelled');
      assert.equal((JSON.parse((await redis.get(`${prefix}:order:${jobId}`)) as string) as OrderRecord).status, 'cancelled');
    } finally {
      await worker.stop();
    }
  });

  it('fails visibly when the study never arrives before the deadline', async () => {
    const worker = await startWorker(loadConfig(env({ CTGATE_STUDY_DEADLINE_MINUTES: '1', CTGATE_STUDY_CHECK_MS: '1000' })), silentLogger);
    try {
      const order = sampleOrder({ accessionNumber: 'ACC-NEVER', placerOrderNumber: 'PLC-W4' });
      const jobId = jobIdFor(order.sender, 'PLC-W4');
      // Received 59 s ago: the one-minute deadline passes during the first check.
      await queue.add('screen', { order, receivedAt: new Date(Date.now() - 59_000).toISOString(), messageControlId: 'MSG-W4' }, { jobId });
      assert.equal(await waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 30_000), 'failed');
      const job = await queue.getJob(jobId);
      assert.match(job?.failedReason ?? '', /wait-for-study: the study did not arrive/);
      const st = await states.get(jobId);
      assert.equal(st?.lastError?.stage, 'wait-for-study');
      assert.equal(st?.lastError?.retryable, false);
    } finally {
      await worker.stop();
    }
  });
});
