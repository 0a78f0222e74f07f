/**
 * The screening job end to end with real peers: Redis (BullMQ), Orthanc with DICOMweb (study in, SEG out), the
 * trained models, python-hl7's MLLP server as the EMR receiving the ORU. Also: a worker SIGKILLed mid-job is
 * replaced by one that resumes at the checkpointed stage (the analysis is not run twice); a cancel stops a job at
 * the next stage boundary; a study that never arrives fails visibly with the reason.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { jobIdFor } from '../../src/domain/job.js';
import { loadManifest } from '../../src/inference/manifest.js';
import { silentLogger } from '../../src/observability/log.js';
import type { OrderRecord } from '../../src/orders/store.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';
import { fastWorkerEnv, killWorkers, spawnWorker, uploadStudy, WorkerQueue, waitFor } from '../helpers/worker-process.js';

describe('screening worker (Redis, Orthanc, models, python-hl7 receiver)', () => {
  const orthanc = new TestOrthanc();
  const fhir = new TestFhirServer();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;
  let rx: Receiver;
  let oruPort = 0;

  const env = (extra: Record<string, string> = {}): Record<string, string> =>
    fastWorkerEnv(
      { redisUrl: REDIS_URL, prefix, pacsUrl: orthanc.dicomweb, fhirUrl: fhir.url, oruPort },
      { CTGATE_ORU_CONNECT_TIMEOUT_MS: '500', CTGATE_STAGE_ATTEMPTS: '20', ...extra },
    );

  before(async () => {
    await requireRedis();
    await Promise.all([orthanc.start(), fhir.start()]);
    jq = new WorkerQueue(REDIS_URL, prefix);
    rx = await startReceiver();
    oruPort = rx.port;
  });

  after(async () => {
    killWorkers();
    for (const p of running) p.kill('SIGTERM');
    await jq?.close();
    await orthanc.stop();
    await fhir.stop();
    await deleteKeys(prefix);
  });

  it('runs an order from the study in the PACS to SEG, ORU and a positive verdict', async () => {
    const series = await uploadStudy(orthanc, { seed: 501, kind: 'covid', accession: 'ACC-W1' });
    const worker = await startWorker(loadConfig(env()), silentLogger);
    try {
      const jobId = await jq.addJob('ACC-W1', 'PLC-W1');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed'), 'completed', JSON.stringify(await jq.states.get(jobId)));
      const job = await jq.queue.getJob(jobId);
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
      // Beside the CT and the SEG, one series of key images (secondary captures, Modality OT) for viewers without SEG,
      // and one key object selection (KO) that flags them and their CT slices.
      const all = await orthanc.client().searchSeries(series.studyInstanceUid);
      const modalities = all.map((s) => str(s, TAG.Modality)).sort();
      assert.deepEqual(modalities, ['CT', 'KO', 'OT', 'SEG', 'SR']);
      const keySeries = all.find((s) => str(s, TAG.Modality) === 'OT');
      assert.match(str(keySeries ?? {}, TAG.SeriesDescription) ?? '', /NOT FOR CLINICAL USE/);
      const segOut = (await jq.states.get(jobId))?.outputs['write-seg'];
      assert.ok(segOut && 'keyImageSeriesInstanceUid' in segOut, JSON.stringify(segOut));
      assert.equal(segOut.keyImageSeriesInstanceUid, str(keySeries ?? {}, TAG.SeriesInstanceUID));
      const keyInstances = await orthanc.client().searchInstances(series.studyInstanceUid, segOut.keyImageSeriesInstanceUid as string);
      assert.equal(keyInstances.length, segOut.keyImages);
      assert.ok(keyInstances.length >= 1);
      const kosSeries = all.find((s) => str(s, TAG.Modality) === 'KO');
      assert.ok(segOut.kosSeriesInstanceUid, JSON.stringify(segOut));
      assert.equal(segOut.kosSeriesInstanceUid, str(kosSeries ?? {}, TAG.SeriesInstanceUID));
      assert.equal((await orthanc.client().searchInstances(series.studyInstanceUid, segOut.kosSeriesInstanceUid)).length, 1);
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
      const st = await jq.states.get(jobId);
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
    const series = await uploadStudy(orthanc, { seed: 502, kind: 'covid', accession: 'ACC-W2' });
    const w = spawnWorker(env({ CTGATE_ORU_PORT: String(downPort) }), { tail: 4000 });
    const jobId = await jq.addJob('ACC-W2', 'PLC-W2');
    await waitFor(
      'the job to reach send-oru',
      async () => {
        const st = await jq.states.get(jobId);
        return st?.stage === 'send-oru' && (st.attempts['send-oru'] ?? 0) >= 1 && st.lastError;
      },
      120_000,
      { worker: w, everyMs: 200 },
    );
    w.child.kill('SIGKILL');
    await once(w.child, 'exit');

    // The EMR comes back on that port; a new worker takes the job over (after its lock expires) and finishes it.
    const rx2 = await startReceiver({ port: downPort });
    const worker = await startWorker(loadConfig(env({ CTGATE_ORU_PORT: String(downPort) })), silentLogger);
    try {
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 150_000), 'completed');
      const st = await jq.states.get(jobId);
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
    await jq.redis.set(`${prefix}:order:${jobId}`, JSON.stringify(record));
    const worker = await startWorker(loadConfig(env()), silentLogger);
    try {
      await jq.queue.add('screen', { order, receivedAt: at, messageControlId: 'MSG-W3' }, { jobId });
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed'), 'completed');
      assert.equal((await jq.queue.getJob(jobId))?.returnvalue.status, 'cancelled');
      assert.equal((JSON.parse((await jq.redis.get(`${prefix}:order:${jobId}`)) as string) as OrderRecord).status, 'cancelled');
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
      await jq.queue.add('screen', { order, receivedAt: new Date(Date.now() - 59_000).toISOString(), messageControlId: 'MSG-W4' }, { jobId });
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 30_000), 'failed');
      const job = await jq.queue.getJob(jobId);
      assert.match(job?.failedReason ?? '', /wait-for-study: the study did not arrive/);
      const st = await jq.states.get(jobId);
      assert.equal(st?.lastError?.stage, 'wait-for-study');
      assert.equal(st?.lastError?.retryable, false);
    } finally {
      await worker.stop();
    }
  });
});
