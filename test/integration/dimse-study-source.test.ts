/**
 * Issue 19 (item 3): a PACS without DICOMweb. Orthanc with its DICOMweb plugin off (its REST API and DICOM server
 * only) holds a synthetic chest CT; the real worker with CTGATE_STUDY_SOURCE=dimse finds the study by accession with
 * C-FIND (DCMTK findscu), checks the patient, lists the series with C-FIND, brings the chosen one with C-GET (DCMTK
 * getscu) into a private temporary folder that is deleted after reading, runs the shipped models and stores the
 * results back by C-STORE (CTGATE_RESULTS_TRANSPORT=dimse). A PACS that lets ctgate find but not retrieve (Orthanc
 * AllowGet false for its AE title) gives the job a visible lastError at retrieve, peer pacs-dimse.
 * With CTGATE_PACS_DIMSE_RETRIEVE=move the series goes by C-MOVE to ctgate's own C-STORE receiver and is read from its
 * folder; a C-MOVE that moves nothing (Orthanc cannot reach the destination) stops the job visibly too.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { type DimseReceiver, startDimseReceiver } from '../../src/dimse-receive/receiver.js';
import { silentLogger } from '../../src/observability/log.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { fastWorkerEnv, WorkerQueue } from '../helpers/worker-process.js';

const cgetFolders = () => readdirSync(tmpdir()).filter((n) => n.startsWith('ctgate-cget-')).length;

describe('study source dimse: C-FIND and C-GET against a PACS without DICOMweb (Orthanc, plugin off)', () => {
  let orthanc: TestOrthanc;
  let receiver: DimseReceiver | undefined;
  let receiveDir = '';
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;

  const env = (ae: string, extra: Record<string, string> = {}) =>
    fastWorkerEnv(
      { redisUrl: REDIS_URL, prefix, pacsUrl: orthanc.dicomweb },
      {
        CTGATE_STUDY_SOURCE: 'dimse',
        CTGATE_PACS_DIMSE_HOST: '127.0.0.1',
        CTGATE_PACS_DIMSE_PORT: String(orthanc.dicomPort),
        CTGATE_PACS_DIMSE_CALLED_AE: 'PACSQR',
        CTGATE_PACS_DIMSE_TIMEOUT_S: '10',
        CTGATE_DICOM_AE_TITLE: ae,
        CTGATE_RESULTS_TRANSPORT: 'dimse',
        CTGATE_RESULTS_DIMSE_HOST: '127.0.0.1',
        CTGATE_RESULTS_DIMSE_PORT: String(orthanc.dicomPort),
        CTGATE_RESULTS_DIMSE_CALLED_AE: 'PACSQR',
        CTGATE_STAGE_ATTEMPTS: '2',
        CTGATE_DIMSE_RECEIVE_DIR: receiveDir,
        ...extra,
      },
    );

  /** Stores a synthetic study through Orthanc's REST API (its DICOMweb is off). */
  async function storeStudy(seed: number, accession: string) {
    const p = generateChestCt({ seed, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, { seed, accessionNumber: accession, patientId: 'MRN000123', seriesDescription: 'synthetic dimse' });
    for (const f of series.files) {
      const r = await fetch(`${orthanc.url}/instances`, { method: 'POST', body: Buffer.from(f.bytes) });
      assert.equal(r.status, 200);
    }
    return series;
  }

  const seriesOf = async (studyInstanceUid: string, modality: string) =>
    (await (
      await fetch(`${orthanc.url}/tools/find`, {
        method: 'POST',
        body: JSON.stringify({ Level: 'Series', Query: { StudyInstanceUID: studyInstanceUid, Modality: modality } }),
      })
    ).json()) as string[];

  before(async () => {
    await requireRedis();
    // ctgate's C-STORE receiver (the C-MOVE destination) listens on a port Orthanc must know at its start.
    const rcvPort = await freePort();
    receiveDir = join(await mkdtemp(join(tmpdir(), 'ctgate-dimse-src-')), 'receive');
    orthanc = new TestOrthanc({
      dicomweb: false,
      dicom: {
        aet: 'PACSQR',
        modalities: {
          // ctgate: may find, get and move, and is the C-MOVE destination (its receiver).
          CTGATE: ['CTGATE', '127.0.0.1', rcvPort],
          // May find, may not C-GET; as a C-MOVE destination it is unreachable (port 1).
          NOGET: { AET: 'CTGATE-NOGET', Host: '127.0.0.1', Port: 1, AllowGet: false },
        },
      },
    });
    await orthanc.start();
    const rcv = loadConfig({
      CTGATE_DIMSE_LISTEN_PORT: String(rcvPort),
      CTGATE_DIMSE_ALLOWED_CALLERS: 'PACSQR@127.0.0.1',
      CTGATE_DIMSE_RECEIVE_DIR: receiveDir,
      CTGATE_DIMSE_STABLE_S: '1',
    }).dimseReceive;
    assert.ok(rcv);
    receiver = await startDimseReceiver(rcv, silentLogger, { scanMs: 200 });
    jq = new WorkerQueue(REDIS_URL, prefix);
  });
  after(async () => {
    await jq?.close();
    await receiver?.stop();
    await orthanc?.stop();
    await deleteKeys(prefix);
    if (receiveDir) await rm(join(receiveDir, '..'), { recursive: true, force: true });
  });

  it('has no DICOMweb: QIDO answers 404', async () => {
    assert.equal((await fetch(`${orthanc.dicomweb}/studies`)).status, 404);
  });

  it('finds the study by accession (C-FIND), retrieves the series (C-GET), analyses it and stores the SEG by C-STORE', async () => {
    const series = await storeStudy(701, 'ACC-QR-1');
    const before = cgetFolders();
    const worker = await startWorker(loadConfig(env('CTGATE')), silentLogger);
    try {
      const jobId = await jq.addJob('ACC-QR-1', 'PLC-QR-1');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 240_000), 'completed', JSON.stringify(await jq.states.get(jobId)));
      const st = await jq.states.get(jobId);
      assert.equal(st?.outputs['wait-for-study']?.studyInstanceUid, series.studyInstanceUid);
      assert.equal(st?.outputs['wait-for-study']?.matchedBy, 'accessionNumber');
      assert.equal(st?.outputs['wait-for-study']?.instances, 52);
      assert.equal(st?.outputs['wait-for-study']?.patientIdentity?.outcome, 'match');
      assert.equal(st?.outputs.retrieve?.seriesInstanceUid, series.seriesInstanceUid);
      assert.equal(st?.outputs.retrieve?.slices, 52);
      assert.ok(st?.outputs.analyze?.verdict);
      assert.equal((await seriesOf(series.studyInstanceUid, 'SEG')).length, 1, 'the SEG, by C-STORE, in the study');
      assert.equal(cgetFolders(), before, 'the C-GET folder was deleted');
    } finally {
      await worker.stop();
    }
  });

  it('a PACS that refuses the C-GET: the job stops at retrieve with a visible lastError (peer pacs-dimse), nothing stored', async (t) => {
    const series = await storeStudy(702, 'ACC-QR-2');
    const before = cgetFolders();
    const worker = await startWorker(loadConfig(env('CTGATE-NOGET')), silentLogger);
    try {
      const jobId = await jq.addJob('ACC-QR-2', 'PLC-QR-2');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 120_000), 'failed');
      const st = await jq.states.get(jobId);
      assert.equal(st?.outputs['wait-for-study']?.studyInstanceUid, series.studyInstanceUid, 'C-FIND was allowed');
      assert.equal(st?.lastError?.stage, 'retrieve');
      assert.equal(st?.lastError?.peer, 'pacs-dimse');
      assert.match(st?.lastError?.message ?? '', /C-GET/);
      t.diagnostic(`lastError: ${st?.lastError?.message}`);
      assert.ok(!(st?.lastError?.message ?? '').includes('127.0.0.1'), 'no host in the message');
      assert.equal((await seriesOf(series.studyInstanceUid, 'SEG')).length, 0);
      assert.equal(cgetFolders(), before, 'the C-GET folder was deleted');
    } finally {
      await worker.stop();
    }
  });

  it("CTGATE_PACS_DIMSE_RETRIEVE=move: the series goes by C-MOVE to ctgate's receiver and is analysed from its folder", async () => {
    const series = await storeStudy(703, 'ACC-QR-3');
    const worker = await startWorker(loadConfig(env('CTGATE', { CTGATE_PACS_DIMSE_RETRIEVE: 'move' })), silentLogger);
    try {
      const jobId = await jq.addJob('ACC-QR-3', 'PLC-QR-3');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 240_000), 'completed', JSON.stringify(await jq.states.get(jobId)));
      const st = await jq.states.get(jobId);
      assert.equal(st?.outputs.retrieve?.seriesInstanceUid, series.seriesInstanceUid);
      assert.equal(st?.outputs.retrieve?.slices, 52);
      // The instances are in ctgate's receive folder (kept for its retention, which the job held).
      const index = receiver?.index;
      await index?.scan();
      assert.equal(index?.seriesFiles(series.studyInstanceUid, series.seriesInstanceUid).length, 52);
      assert.equal((await seriesOf(series.studyInstanceUid, 'SEG')).length, 1);
    } finally {
      await worker.stop();
    }
  });

  it('a C-MOVE that moves nothing (the PACS cannot reach the destination): a visible lastError at retrieve', async (t) => {
    const series = await storeStudy(704, 'ACC-QR-4');
    const worker = await startWorker(loadConfig(env('CTGATE-NOGET', { CTGATE_PACS_DIMSE_RETRIEVE: 'move' })), silentLogger);
    try {
      const jobId = await jq.addJob('ACC-QR-4', 'PLC-QR-4');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 120_000), 'failed');
      const st = await jq.states.get(jobId);
      assert.equal(st?.outputs['wait-for-study']?.studyInstanceUid, series.studyInstanceUid);
      assert.equal(st?.lastError?.stage, 'retrieve');
      assert.equal(st?.lastError?.peer, 'pacs-dimse');
      assert.match(st?.lastError?.message ?? '', /C-MOVE/);
      t.diagnostic(`lastError: ${st?.lastError?.message}`);
      assert.equal((await seriesOf(series.studyInstanceUid, 'SEG')).length, 0);
    } finally {
      await worker.stop();
    }
  });
});
