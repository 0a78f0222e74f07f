/**
 * Patient identity with real peers (Redis, Orthanc, the Medplum FHIR server, python-hl7's MLLP receiver as the EMR,
 * the trained models): an order whose patient is not the study's patient — here HOLD-MRN-9, another name and birth
 * date, carrying another patient's accession number — fails visibly, naming the fields that differ (never their
 * values), and nothing goes out for it: no SEG, no FHIR resource, no ORU. An analysis already made for the study's
 * own order is not shared with it. A sender whose RIS issues other MRNs than the PACS, with a rule relaxed to name and
 * birth date, goes through once the mappings say so and the failed job is retried.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { seriesExplainCommand } from '../../src/cli/series-explain.js';
import { type RunningWorker, startWorker } from '../../src/cli/worker.js';
import { loadConfig } from '../../src/config/index.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { jobIdFor } from '../../src/domain/job.js';
import type { Order } from '../../src/domain/order.js';
import type { JobState } from '../../src/jobs/job-state.js';
import { silentLogger } from '../../src/observability/log.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';
import { fastWorkerEnv, uploadStudy, WorkerQueue } from '../helpers/worker-process.js';

/** Another patient than the studies' (MRN000123, SYNTHETIC^CHEST, 1970-01-01 — sampleOrder's patient). */
const HOLD: Order['patient'] = {
  identifiers: [{ value: 'HOLD-MRN-9', authority: 'GENHOSP', type: 'MR' }],
  name: { family: 'Holder', given: ['Nina'] },
  birthDate: '1988-08-08',
  sex: 'female',
};
const PHI_VALUES = ['HOLD-MRN-9', 'MRN000123', 'Holder', 'Nina', '1988', '19880808', 'SYNTHETIC', '19700101'];

describe('patient identity: an order is matched to a study only when the patients agree (Redis, Orthanc, FHIR, python-hl7 receiver)', () => {
  const orthanc = new TestOrthanc();
  const fhir = new TestFhirServer();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;
  let rx: Receiver;
  let tmp = '';
  let mappingsFile = '';
  let worker: RunningWorker | undefined;

  const env = () =>
    loadConfig(
      fastWorkerEnv({ redisUrl: REDIS_URL, prefix, pacsUrl: orthanc.dicomweb, fhirUrl: fhir.url, oruPort: rx.port }, { CTGATE_MAPPINGS_FILE: mappingsFile }),
    );

  /** Queues an order (sampleOrder with these changes) and gives its job id. */
  async function addOrder(o: Partial<Order> & { accessionNumber: string; placerOrderNumber: string }): Promise<string> {
    const order = sampleOrder(o);
    const jobId = jobIdFor(order.sender, order.placerOrderNumber);
    await jq.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: `MSG-${order.placerOrderNumber}` }, { jobId, attempts: 3 });
    return jobId;
  }

  async function finished(jobId: string): Promise<{ state: string; checkpoint: JobState; failedReason: string }> {
    const state = await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 240_000);
    const job = await jq.queue.getJob(jobId);
    return { state, checkpoint: (await jq.states.get(jobId)) as JobState, failedReason: job?.failedReason ?? '' };
  }

  const orusFor = (placer: string) => rx.received().filter((m) => m.toString().includes(`|${placer}`));
  const fhirCount = async (query: string) => {
    const b = (await (await fetch(`${fhir.url}/${query}${query.includes('?') ? '&' : '?'}_count=1000`)).json()) as { entry?: unknown[] };
    return b.entry?.length ?? 0;
  };
  /** The mismatch counter for a sender, as the worker stored it in Redis (flushed when the worker stops). */
  const mismatches = async (sender: string, action = 'failed') =>
    Number((await jq.redis.hget(`${prefix}:metrics`, `ctgate_patient_identity_mismatches_total|${JSON.stringify([sender, action])}`)) ?? 0);
  const shares = async () => Number((await jq.redis.hget(`${prefix}:metrics`, 'ctgate_analyses_shared_total|[]')) ?? 0);

  /** The checks every refused order must pass: failed for good, the fields named, no value, nothing sent. */
  async function assertRefused(jobId: string, placer: string, stage: 'wait-for-study' | 'retrieve', fields: RegExp) {
    const { state, checkpoint, failedReason } = await finished(jobId);
    assert.equal(state, 'failed', JSON.stringify(checkpoint));
    assert.match(
      failedReason,
      new RegExp(
        `^${stage}: patient identity mismatch: ${fields.source} from the order \\(sender GENHOSP, rule patientIdentity: compare id, issuer, name, birthDate\\)$`,
      ),
    );
    assert.equal(checkpoint.lastError?.stage, stage);
    assert.equal(checkpoint.lastError?.peer, 'pacs');
    assert.equal(checkpoint.lastError?.kind, 'patient-identity');
    assert.equal(checkpoint.lastError?.retryable, false);
    for (const v of PHI_VALUES) {
      assert.ok(!failedReason.includes(v), `no patient value in the reason (${v})`);
      assert.ok(!JSON.stringify(checkpoint).includes(v), `no patient value in the checkpoint (${v})`);
    }
    // Nothing ran after the check, nothing was written or sent for this order.
    assert.equal(checkpoint.outputs.analyze, undefined);
    assert.equal(checkpoint.outputs['write-seg'], undefined);
    assert.equal(checkpoint.outputs['write-fhir'], undefined);
    assert.equal(checkpoint.outputs['send-oru'], undefined);
    assert.equal(orusFor(placer).length, 0, 'no ORU for the refused order');
    assert.equal(await fhirCount('Patient?identifier=HOLD-MRN-9'), 0, 'no FHIR Patient for the refused order');
    assert.equal(await fhirCount(`ServiceRequest?identifier=${placer}`), 0, 'no ServiceRequest (nor report) for the refused order');
    return checkpoint;
  }

  before(async () => {
    await requireRedis();
    await Promise.all([orthanc.start(), fhir.start()]);
    jq = new WorkerQueue(REDIS_URL, prefix);
    rx = await startReceiver();
    tmp = await mkdtemp(join(tmpdir(), 'ctgate-identity-'));
    mappingsFile = join(tmp, 'orders.yaml');
    await copyFile('mappings/orders.yaml', mappingsFile);
    worker = await startWorker(env(), silentLogger);
  });

  after(async () => {
    await worker?.stop();
    for (const p of running) p.kill('SIGTERM');
    await jq?.close();
    await orthanc.stop();
    await fhir.stop();
    await deleteKeys(prefix);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("(a) an order for another patient carrying this study's accession fails, naming the fields, and sends nothing", async () => {
    const series = await uploadStudy(orthanc, { seed: 631, kind: 'covid', accession: 'ACC-PI-A' });
    const reportsBefore = await fhirCount('DiagnosticReport');
    const before = await mismatches('GENHOSP');
    const jobId = await addOrder({ accessionNumber: 'ACC-PI-A', placerOrderNumber: 'PLC-PI-HOLD', patient: HOLD });
    await assertRefused(jobId, 'PLC-PI-HOLD', 'wait-for-study', /PatientID, PatientName, PatientBirthDate differ/);
    assert.equal(await fhirCount('DiagnosticReport'), reportsBefore, 'no DiagnosticReport');
    const all = await orthanc.client().searchSeries(series.studyInstanceUid);
    assert.deepEqual(
      all.map((s) => str(s, TAG.Modality)),
      ['CT'],
      'no SEG, SR or key images in the PACS',
    );
    await worker?.stop();
    worker = await startWorker(env(), silentLogger); // the stop flushed the metrics
    assert.equal(await mismatches('GENHOSP'), before + 1);
  });

  it('(b) after the study’s own order was analysed, the other patient’s order neither shares its analysis nor gets a result', async () => {
    const series = await uploadStudy(orthanc, { seed: 632, kind: 'covid', accession: 'ACC-PI-B' });
    // The study's own patient first: analysed, published for sharing, ORU and report sent.
    const own = await finished(await addOrder({ accessionNumber: 'ACC-PI-B', placerOrderNumber: 'PLC-PI-OWN' }));
    assert.equal(own.state, 'completed', JSON.stringify(own.checkpoint));
    assert.ok(own.checkpoint.timingsMs.analyze !== undefined, 'the models ran for the matching order');
    assert.deepEqual(own.checkpoint.outputs['wait-for-study']?.patientIdentity?.compared, ['PatientID', 'PatientName', 'PatientBirthDate']);
    assert.equal(own.checkpoint.outputs['wait-for-study']?.patientIdentity?.outcome, 'match');
    assert.equal(own.checkpoint.outputs.retrieve?.patientIdentity?.outcome, 'match');
    assert.equal(orusFor('PLC-PI-OWN').length, 1);
    const reports = await fhirCount('DiagnosticReport');
    const sharedBefore = await shares();

    // Then another patient's order with the same accession: refused before anything is shared.
    const hold = await assertRefused(
      await addOrder({ accessionNumber: 'ACC-PI-B', placerOrderNumber: 'PLC-PI-HOLD2', patient: HOLD }),
      'PLC-PI-HOLD2',
      'wait-for-study',
      /PatientID, PatientName, PatientBirthDate differ/,
    );
    assert.equal(hold.outputs.retrieve, undefined);

    // The check is made again before an analysis is shared: a job that resumes at retrieve (its wait-for-study passed
    // under an earlier rule, or before the PACS's patient data changed) is refused there, on the series itself.
    const order = sampleOrder({ accessionNumber: 'ACC-PI-B', placerOrderNumber: 'PLC-PI-HOLD3', patient: HOLD });
    const jobId = jobIdFor(order.sender, 'PLC-PI-HOLD3');
    const now = new Date().toISOString();
    await jq.states.put({
      jobId,
      stage: 'retrieve',
      attempts: {},
      timingsMs: { 'wait-for-study': 1 },
      outputs: { 'wait-for-study': { studyInstanceUid: series.studyInstanceUid, instances: series.files.length, matchedBy: 'accessionNumber' } },
      startedAt: now,
      updatedAt: now,
    });
    await jq.queue.add('screen', { order, receivedAt: now, messageControlId: 'MSG-PI-HOLD3' }, { jobId, attempts: 3 });
    const resumed = await assertRefused(jobId, 'PLC-PI-HOLD3', 'retrieve', /PatientID, PatientName, PatientBirthDate differ/);
    assert.equal(resumed.outputs.retrieve, undefined, 'no series retrieved or shared');
    assert.equal(resumed.outputs.analyze?.reusedFrom, undefined);

    // One report (the matching order's), one SEG, and no share.
    assert.equal(await fhirCount('DiagnosticReport'), reports);
    assert.equal((await orthanc.client().searchSeries(series.studyInstanceUid, { Modality: 'SEG' })).length, 1);
    assert.equal(orusFor('PLC-PI-OWN').length, 1);
    await worker?.stop();
    worker = await startWorker(env(), silentLogger);
    assert.equal(await shares(), sharedBefore, 'no analysis shared');
  });

  it('(c) a sender whose RIS issues other MRNs: refused under the default rule, accepted once its rule compares name and birth date, on retry', async () => {
    // The PACS knows the patient as MRN000777; the RIS sends its own number, with the same name and birth date.
    await uploadStudy(orthanc, { seed: 633, kind: 'covid', accession: 'ACC-PI-C', patientId: 'MRN000777' });
    const risPatient: Order['patient'] = { ...sampleOrder().patient, identifiers: [{ value: 'RIS-555', authority: 'RISA', type: 'PI' }] };
    const sender = { application: 'RIS', facility: 'RIS_A' };
    const jobId = await addOrder({ accessionNumber: 'ACC-PI-C', placerOrderNumber: 'PLC-PI-C', sender, patient: risPatient });
    const first = await finished(jobId);
    assert.equal(first.state, 'failed');
    assert.match(first.failedReason, /^wait-for-study: patient identity mismatch: PatientID differs from the order \(sender RIS_A, rule patientIdentity: /);
    assert.equal(orusFor('PLC-PI-C').length, 0);

    // The integration engineer relaxes this sender's rule; the worker follows the file. Then the job is retried as
    // POST /api/jobs/:id/retry does (a failed wait-for-study restarts with a fresh deadline).
    const yaml = await readFile(mappingsFile, 'utf8');
    await writeFile(mappingsFile, yaml.replace(/^facilities:\n/m, 'facilities:\n  RIS_A:\n    patientIdentity:\n      compare: [name, birthDate]\n'));
    const job = await jq.queue.getJob(jobId);
    assert.ok(job);
    await job.updateData({ ...job.data, receivedAt: new Date().toISOString() });
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    const second = await finished(jobId);
    assert.equal(second.state, 'completed', JSON.stringify(second.checkpoint));
    const identity = second.checkpoint.outputs['wait-for-study']?.patientIdentity;
    assert.equal(identity?.outcome, 'match');
    assert.deepEqual(identity?.compared, ['PatientName', 'PatientBirthDate']);
    assert.match(identity?.rule ?? '', /^facilities\.RIS_A\.patientIdentity: compare name, birthDate$/);
    assert.equal(orusFor('PLC-PI-C').length, 1, 'the ORU went out');
    const fhirOut = second.checkpoint.outputs['write-fhir'];
    assert.ok(fhirOut && 'diagnosticReportId' in fhirOut);
    assert.equal((await fetch(`${fhir.url}/DiagnosticReport/${fhirOut.diagnosticReportId}`)).status, 200);

    // The relaxed rule still refuses another person (another birth date) from that sender.
    const other = await finished(
      await addOrder({
        accessionNumber: 'ACC-PI-C',
        placerOrderNumber: 'PLC-PI-C2',
        sender,
        patient: { ...risPatient, birthDate: '1988-08-08' },
      }),
    );
    assert.equal(other.state, 'failed');
    assert.match(
      other.failedReason,
      /^wait-for-study: patient identity mismatch: PatientBirthDate differs from the order \(sender RIS_A, rule facilities\.RIS_A\.patientIdentity: compare name, birthDate\)$/,
    );
    assert.equal(orusFor('PLC-PI-C2').length, 0);

    // mode warn (another sender of the same site, knowingly): the mismatch is recorded on the job, which goes on, but
    // the study's analysis (published by PLC-PI-C above) is not shared with it: the models run for it again.
    await writeFile(
      mappingsFile,
      (await readFile(mappingsFile, 'utf8')).replace(/^facilities:\n/m, 'facilities:\n  RIS_W:\n    patientIdentity:\n      mode: warn\n'),
    );
    const warned = await finished(
      await addOrder({ accessionNumber: 'ACC-PI-C', placerOrderNumber: 'PLC-PI-W', sender: { application: 'RIS', facility: 'RIS_W' }, patient: risPatient }),
    );
    assert.equal(warned.state, 'completed', JSON.stringify(warned.checkpoint));
    const w = warned.checkpoint.outputs['wait-for-study']?.patientIdentity;
    assert.equal(w?.action, 'warn');
    assert.deepEqual(w?.differ, ['PatientID']);
    assert.match(
      w?.message ?? '',
      /^patient identity mismatch: PatientID differs from the order \(sender RIS_W, rule facilities\.RIS_W\.patientIdentity: .*mode warn\)$/,
    );
    assert.equal(warned.checkpoint.outputs.retrieve?.patientIdentity?.action, 'warn');
    assert.ok(warned.checkpoint.timingsMs.analyze !== undefined, 'not shared: the models ran');
    assert.equal(warned.checkpoint.outputs.analyze?.reusedFrom, undefined);
    assert.equal(orusFor('PLC-PI-W').length, 1);
    // The EMR is told, by field name: the ORU's first NTE.
    assert.match(
      String(orusFor('PLC-PI-W')[0]),
      /\rNTE\|1\|L\|Patient identity NOT confirmed: the study's DICOM patient does not match the order \(different: PatientID\)/,
    );

    await worker?.stop();
    worker = await startWorker(env(), silentLogger);
    assert.equal(await mismatches('RIS_A'), 2);
    assert.equal(await mismatches('RIS_W', 'warned'), 1, 'counted once per job');
  });

  it('ctgate series explain shows the study’s patient fields (values only on request) and checks an order against them', async () => {
    const orm = (pid: string) =>
      [
        'MSH|^~\\&|EPIC|GENHOSP|CTGATE|RADIOLOGY|20261127101500||ORM^O01^ORM_O01|MSG-EXPLAIN|P|2.5.1',
        pid,
        'ORC|NW|PLC-EXPLAIN^EPIC',
        'OBR|1|PLC-EXPLAIN^EPIC||71250^CT THORAX WO CONTRAST^C4|||||||||||||||ACC-PI-A',
      ].join('\r');
    const holdFile = join(tmp, 'hold.hl7');
    const ownFile = join(tmp, 'own.hl7');
    await writeFile(holdFile, orm('PID|1||HOLD-MRN-9^^^GENHOSP^MR||HOLDER^NINA||19880808|F'));
    await writeFile(ownFile, orm('PID|1||MRN000123^^^GENHOSP^MR||Synthetic^Chest||19700101|O'));
    let out = '';
    let err = '';
    const io = {
      out: (t: string) => {
        out += t;
      },
      err: (t: string) => {
        err += t;
      },
    };
    const explain = async (...args: string[]) => {
      out = '';
      err = '';
      return seriesExplainCommand(['--pacs', orthanc.dicomweb, '--accession', 'ACC-PI-A', ...args], io);
    };

    assert.equal(await explain(), 0, err);
    assert.match(out, /^ {2}PatientID +present$/m);
    assert.match(out, /^ {2}IssuerOfPatientID +absent$/m);
    assert.match(out, /values hidden; --show-patient prints them/);
    assert.ok(!out.includes('MRN000123') && !out.includes('SYNTHETIC'), 'no values by default');
    assert.equal(await explain('--show-patient'), 0, err);
    assert.match(out, /^ {2}PatientID +MRN000123$/m);
    assert.match(out, /^ {2}PatientName +SYNTHETIC\^CHEST$/m);

    assert.equal(await explain('--order', holdFile), 4, err);
    assert.match(out, /^ {2}differ: PatientID, PatientName, PatientBirthDate$/m);
    assert.match(out, /the job would FAIL/);
    assert.equal(await explain('--order', ownFile, '--json'), 0, err);
    const report = JSON.parse(out);
    assert.equal(report.patient.check.action, 'proceed');
    assert.deepEqual(report.patient.check.compared, ['PatientID', 'PatientName', 'PatientBirthDate']);
    assert.deepEqual(report.patient.fields[0], { field: 'PatientID', present: true });
  });
});
