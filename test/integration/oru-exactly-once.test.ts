/**
 * An ORU is delivered once even when the worker dies after the EMR's ACK and before the send-oru checkpoint
 * (issue 11, item 1): a real `ctgate worker` with the test-only CTGATE_TEST_CRASH_AFTER=oru-ack SIGKILLs itself
 * there; a second worker resumes the job at send-oru, finds the "sending" record and does not resend (default
 * CTGATE_ORU_UNCONFIRMED=hold). python-hl7's MLLP server, as the EMR, counts exactly one message.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { jobIdFor } from '../../src/domain/job.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';
import { killWorkers, sleep, spawnWorker as spawnCtgateWorker, uploadStudy, WorkerQueue } from '../helpers/worker-process.js';

describe('ORU exactly once across a worker SIGKILLed after the ACK (real worker, Orthanc, python-hl7)', () => {
  const orthanc = new TestOrthanc();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;
  let rx: Receiver;

  before(async () => {
    await requireRedis();
    await orthanc.start();
    jq = new WorkerQueue(REDIS_URL, prefix);
    rx = await startReceiver();
  });

  after(async () => {
    killWorkers();
    for (const p of running) p.kill('SIGTERM');
    await jq?.close();
    await orthanc.stop();
    await deleteKeys(prefix);
  });

  const spawnWorker = (extra: Record<string, string> = {}) =>
    spawnCtgateWorker(
      {
        CTGATE_REDIS_URL: REDIS_URL,
        CTGATE_REDIS_PREFIX: prefix,
        CTGATE_REDIS_REQUIRE_AOF: 'false',
        CTGATE_PACS_URL: orthanc.dicomweb,
        CTGATE_ORU_HOST: '127.0.0.1',
        CTGATE_ORU_PORT: String(rx.port),
        CTGATE_STUDY_POLL_MS: '200',
        CTGATE_STUDY_STABLE_MS: '300',
        CTGATE_MODEL_THREADS: '2',
        CTGATE_LOG_LEVEL: 'info',
        ...extra,
      },
      { tail: 20000 },
    );

  it('the EMR gets the ORU once; the resumed job records deliveryUnknown instead of resending', async () => {
    await uploadStudy(orthanc, { seed: 701, kind: 'covid', accession: 'ACC-X1', patientId: 'MRN000701' });
    const order = sampleOrder({ accessionNumber: 'ACC-X1', placerOrderNumber: 'PLC-X1' });
    order.patient.identifiers = [{ value: 'MRN000701', authority: 'GENHOSP', type: 'MR' }]; // the study's patient
    const jobId = jobIdFor(order.sender, 'PLC-X1');

    const a = spawnWorker({ CTGATE_TEST_CRASH_AFTER: 'oru-ack' });
    await jq.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: 'MSG-X1' }, { jobId, attempts: 3 });
    // Until worker A is gone, or the job ends without it dying (the crash point missed).
    let died: Awaited<typeof a.exited> | null = null;
    void a.exited.then((d) => {
      died = d;
    });
    const until = Date.now() + 240_000;
    while (!died && Date.now() < until) {
      const s = await jq.queue.getJobState(jobId);
      if (s === 'completed' || s === 'failed') break;
      await sleep(250);
    }
    if (!died) await Promise.race([a.exited.then((d) => (died = d)), sleep(2000)]);
    assert.ok(died, `worker A did not stop (job ${await jq.queue.getJobState(jobId)}, ORUs received ${rx.received().length}): ${a.stderr().slice(-2000)}`);
    assert.equal(died.signal, 'SIGKILL', `worker A should have killed itself after the ACK: ${JSON.stringify(died)} ${a.stderr().slice(-3000)}`);
    assert.equal(rx.received().length, 1, 'the EMR got the ORU before the worker died');
    const mid = await jq.states.get(jobId);
    assert.equal(mid?.stage, 'send-oru', JSON.stringify(mid));
    assert.ok(mid?.oruSending, 'the "sending" record survived the crash');

    const b = spawnWorker();
    const deadline = Date.now() + 120_000;
    let state = '';
    while (Date.now() < deadline) {
      state = await jq.queue.getJobState(jobId);
      if (state === 'completed' || state === 'failed') break;
      await sleep(250);
    }
    assert.equal(state, 'completed', `${JSON.stringify(await jq.states.get(jobId))} ${b.stderr().slice(-3000)}`);
    const received = rx.received();
    assert.equal(received.length, 1, 'exactly one ORU at the EMR');
    const msh10 = received[0]?.toString('latin1').split('\r')[0]?.split('|')[9];
    const cp = await jq.states.get(jobId);
    const out = cp?.outputs['send-oru'];
    assert.ok(out && 'controlId' in out, JSON.stringify(out));
    assert.equal(out.controlId, msh10);
    assert.equal(out.ackCode, 'unknown');
    assert.match(out.deliveryUnknown ?? '', new RegExp(`check the EMR for MSH-10 ${msh10}`));
    assert.equal(cp?.oruSending, undefined);
    b.child.kill('SIGTERM');
  });
});
