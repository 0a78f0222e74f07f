/**
 * Issue 19 (item 2): an order whose study reaches ctgate only by C-STORE. DCMTK's storescu (the modality) pushes a
 * synthetic chest CT to the gateway's C-STORE receiver; an ORM^O01 arrives over MLLP (python-hl7's mllp_send, the
 * real sender); the real worker with CTGATE_STUDY_SOURCE=received finds the study in the receive folder by its
 * accession number, checks the patient, picks the series, reads its files and runs the shipped models; the SEG
 * (with SR, KOS, key images) is stored to the PACS (Orthanc over DICOMweb) in the received study's
 * StudyInstanceUID. Both orders of arrival: the study before the order, and the order before the study (the job
 * waits in wait-for-study until the study is received and stable). The gateway's retention holds a received study
 * while an unfinished job uses it (or waits for its accession), and lets it go once the job finished.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type RunningWorker, startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { type DimsePeer, storeFiles } from '../../src/dicom/dcmtk.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import type { StudyIndex } from '../../src/dimse-receive/study-index.js';
import { jobIdFor } from '../../src/domain/job.js';
import { silentLogger } from '../../src/observability/log.js';
import { writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ackField, mllpSend, orm } from '../helpers/hl7.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { REDIS_URL, requireRedis } from '../helpers/redis.js';
import { fastWorkerEnv, WorkerQueue, waitFor } from '../helpers/worker-process.js';

const SENDER = { application: 'EPIC', facility: 'GENHOSP' };

/** A synthetic chest CT of the orm() helper's patient (PID MRN0001, TEST^PATIENT, born 19700101), written to files. */
async function studyFiles(dir: string, seed: number, accession: string) {
  const p = generateChestCt({ seed, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
  const series = writeCtSeries(p.volume, {
    seed,
    accessionNumber: accession,
    patientId: 'MRN0001',
    patientName: 'TEST^PATIENT',
    patientBirthDate: '19700101',
    seriesDescription: 'synthetic received',
  });
  const files = await writeSeriesToDir(dir, series);
  return { files, studyInstanceUid: series.studyInstanceUid, seriesInstanceUid: series.seriesInstanceUid };
}

describe('a study received by C-STORE analysed for its order (storescu → receiver, ORM over MLLP, worker with source received)', () => {
  const orthanc = new TestOrthanc();
  let root = '';
  let receiveDir = '';
  let gw: TestGateway;
  let jq: WorkerQueue;
  let worker: RunningWorker | undefined;
  let dimsePort = 0;

  const modality = (): DimsePeer => ({ host: '127.0.0.1', port: dimsePort, calledAe: 'CTGATE', callingAe: 'MODALITY', timeoutS: 10, label: 'ctgate' });

  before(async () => {
    await requireRedis();
    await orthanc.start();
    root = await mkdtemp(join(tmpdir(), 'ctgate-received-job-'));
    receiveDir = join(root, 'receive');
    dimsePort = await freePort();
    gw = await startTestGateway({
      CTGATE_DIMSE_LISTEN_PORT: String(dimsePort),
      CTGATE_DIMSE_ALLOWED_CALLERS: 'MODALITY',
      CTGATE_DIMSE_RECEIVE_DIR: receiveDir,
      CTGATE_DIMSE_STABLE_S: '1',
    });
    jq = new WorkerQueue(REDIS_URL, gw.prefix);
    const env = fastWorkerEnv(
      { redisUrl: REDIS_URL, prefix: gw.prefix, pacsUrl: orthanc.dicomweb },
      { CTGATE_STUDY_SOURCE: 'received', CTGATE_DIMSE_RECEIVE_DIR: receiveDir, CTGATE_DIMSE_STABLE_S: '1', CTGATE_STAGE_ATTEMPTS: '5' },
    );
    worker = await startWorker(loadConfig(env), silentLogger);
  });

  after(async () => {
    await worker?.stop();
    await jq?.close();
    await gw?.cleanup();
    await orthanc.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const finished = (jobId: string) => jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 240_000);

  async function assertAnalysedFromReceived(jobId: string, study: { studyInstanceUid: string; seriesInstanceUid: string; files: string[] }) {
    const st = await jq.states.get(jobId);
    const job = await jq.queue.getJob(jobId);
    assert.equal(job?.returnvalue?.status, 'completed', JSON.stringify(st));
    assert.equal(job?.returnvalue?.studyInstanceUid, study.studyInstanceUid);
    assert.equal(st?.outputs['wait-for-study']?.matchedBy, 'accessionNumber');
    assert.equal(st?.outputs['wait-for-study']?.instances, study.files.length);
    assert.equal(st?.outputs['wait-for-study']?.patientIdentity?.outcome, 'match');
    assert.equal(st?.outputs.retrieve?.seriesInstanceUid, study.seriesInstanceUid);
    assert.equal(st?.outputs.retrieve?.slices, study.files.length);
    assert.equal(st?.outputs.retrieve?.patientIdentity?.level, 'series');
    assert.ok(st?.outputs.analyze?.verdict, JSON.stringify(st?.outputs.analyze));
    // The results went to the PACS, in the received study (which the PACS did not hold before).
    const segs = await orthanc.client().searchSeries(study.studyInstanceUid, { Modality: 'SEG' });
    assert.equal(segs.length, 1);
    const segOut = st?.outputs['write-seg'];
    assert.ok(segOut && 'seriesInstanceUid' in segOut, JSON.stringify(segOut));
    assert.equal(str(segs[0] ?? {}, TAG.SeriesInstanceUID), segOut.seriesInstanceUid);
    const modalities = (await orthanc.client().searchSeries(study.studyInstanceUid)).map((s) => str(s, TAG.Modality)).sort();
    assert.ok(!modalities.includes('CT'), 'the CT itself never went to the PACS');
    // The study's patient repeated in the SEG, as the received files carry it.
    const [seg] = await orthanc.client().searchStudies({ StudyInstanceUID: study.studyInstanceUid });
    assert.equal(str(seg ?? {}, TAG.PatientID), 'MRN0001');
  }

  it('an order that arrives after its study: analysed from the received files, results in the PACS', async () => {
    const study = await studyFiles(join(root, 'a'), 601, 'ACC-RCV-J1');
    const statuses = await storeFiles(modality(), study.files, 'CT');
    assert.equal(statuses.length, study.files.length);
    const index = gw.dimse?.index as StudyIndex;
    await waitFor(
      'the received study to be stable',
      async () => {
        await index.scan();
        return index.findStudies({ accessionNumber: 'ACC-RCV-J1' })[0]?.stable;
      },
      20_000,
    );
    const [ack] = await mllpSend(gw.mllp.port, [orm({ controlId: 'MSG-RCV-J1', placer: 'PLC-RCV-J1', accession: 'ACC-RCV-J1' })]);
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    const jobId = jobIdFor(SENDER, 'PLC-RCV-J1');
    assert.equal(await finished(jobId), 'completed', JSON.stringify(await jq.states.get(jobId)));
    await assertAnalysedFromReceived(jobId, study);
  });

  it('an order that arrives before its study: the job waits, the study arrives by C-STORE, retention holds it until the job finished', async () => {
    const [ack] = await mllpSend(gw.mllp.port, [orm({ controlId: 'MSG-RCV-J2', placer: 'PLC-RCV-J2', accession: 'ACC-RCV-J2' })]);
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    const jobId = jobIdFor(SENDER, 'PLC-RCV-J2');
    // The job is waiting for a study that has not been received.
    await waitFor(
      'the job to wait for its study',
      async () => {
        const st = await jq.states.get(jobId);
        return st?.stage === 'wait-for-study' && (await jq.queue.getJobState(jobId)) !== 'completed';
      },
      30_000,
    );
    const study = await studyFiles(join(root, 'b'), 602, 'ACC-RCV-J2');
    await storeFiles(modality(), study.files, 'CT');
    const index = gw.dimse?.index as StudyIndex;
    await waitFor(
      'the study in the index',
      async () => {
        await index.scan();
        return index.findStudies({ studyInstanceUid: study.studyInstanceUid })[0];
      },
      20_000,
    );
    // Retention asks the job state: an unfinished job waits for this study's accession (or already found it).
    // (The job cannot have finished yet: the study becomes stable only CTGATE_DIMSE_STABLE_S after its last instance.)
    assert.equal(await index.holds(study.studyInstanceUid), true, `held while the job is ${await jq.queue.getJobState(jobId)}`);
    assert.equal(await index.holds('2.25.999999999'), false, 'a study no job uses is not held');
    assert.equal(await finished(jobId), 'completed', JSON.stringify(await jq.states.get(jobId)));
    await assertAnalysedFromReceived(jobId, study);
    // Finished: nothing holds the study any more (the holds answer is cached for a few seconds).
    await waitFor('the study to be released', async () => (await index.holds(study.studyInstanceUid)) === false, 20_000, { everyMs: 500 });
  });

  it('a received study of another patient: the job stops with the patient identity error, nothing is stored', async () => {
    // A study for someone else under the order's accession: another PatientID and name in every file.
    const p = generateChestCt({ seed: 603, kind: 'covid', size: [64, 64, 24], spacing: [5, 5, 10] });
    const other = writeCtSeries(p.volume, { seed: 603, accessionNumber: 'ACC-RCV-J3', patientId: 'MRN0999', patientName: 'OTHER^PERSON' });
    const files = await writeSeriesToDir(join(root, 'c2'), other);
    await storeFiles(modality(), files, 'CT');
    const [ack] = await mllpSend(gw.mllp.port, [orm({ controlId: 'MSG-RCV-J3', placer: 'PLC-RCV-J3', accession: 'ACC-RCV-J3' })]);
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    const jobId = jobIdFor(SENDER, 'PLC-RCV-J3');
    assert.equal(await finished(jobId), 'failed');
    const st = await jq.states.get(jobId);
    assert.equal(st?.lastError?.stage, 'wait-for-study');
    assert.equal(st?.lastError?.kind, 'patient-identity');
    assert.match(st?.lastError?.message ?? '', /PatientID/);
    assert.ok(!(st?.lastError?.message ?? '').includes('MRN0999'), 'no PHI in the error');
    assert.equal((await orthanc.client().searchStudies({ StudyInstanceUID: other.studyInstanceUid })).length, 0);
  });
});
