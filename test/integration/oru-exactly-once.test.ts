/**
 * An ORU is delivered once even when the worker dies after the EMR's ACK and before the send-oru checkpoint
 * (issue 11, item 1): a real `ctgate worker` with the test-only CTGATE_TEST_CRASH_AFTER=oru-ack SIGKILLs itself
 * there; a second worker resumes the job at send-oru, finds the "sending" record and does not resend (default
 * CTGATE_ORU_UNCONFIRMED=hold). python-hl7's MLLP server, as the EMR, counts exactly one message.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { JobStateStore } from '../../src/jobs/job-state.js';
import { jobIdFor, type ScreeningJobData } from '../../src/jobs/queue.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ORU exactly once across a worker SIGKILLed after the ACK (real worker, Orthanc, python-hl7)', () => {
  const orthanc = new TestOrthanc();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let redis: Redis;
  let queue: Queue<ScreeningJobData>;
  let states: JobStateStore;
  let rx: Receiver;
  const children = new Set<ChildProcess>();

  before(async () => {
    await requireRedis();
    await orthanc.start();
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    queue = new Queue<ScreeningJobData>('screening', { connection: redis, prefix: `${prefix}:bull` });
    states = new JobStateStore(redis, prefix, 1);
    rx = await startReceiver();
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const p of running) p.kill('SIGTERM');
    await queue?.close();
    redis?.disconnect();
    await orthanc.stop();
    await deleteKeys(prefix);
  });

  function spawnWorker(extra: Record<string, string> = {}) {
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], {
      env: {
        ...process.env,
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
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr = (stderr + d).slice(-20000);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    return { child, exited, stderr: () => stderr };
  }

  it('the EMR gets the ORU once; the resumed job records deliveryUnknown instead of resending', async () => {
    const p = generateChestCt({ seed: 701, kind: 'covid', size: [128, 128, 52], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, { seed: 701, accessionNumber: 'ACC-X1', patientId: 'MRN000701', seriesDescription: 'synthetic covid' });
    await orthanc.client().store(series.files.map((f) => f.bytes));
    const order = sampleOrder({ accessionNumber: 'ACC-X1', placerOrderNumber: 'PLC-X1' });
    const jobId = jobIdFor(order.sender, 'PLC-X1');

    const a = spawnWorker({ CTGATE_TEST_CRASH_AFTER: 'oru-ack' });
    await queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: 'MSG-X1' }, { jobId, attempts: 3 });
    // Until worker A is gone, or the job ends without it dying (the crash point missed).
    let died: Awaited<typeof a.exited> | null = null;
    void a.exited.then((d) => {
      died = d;
    });
    const until = Date.now() + 240_000;
    while (!died && Date.now() < until) {
      const s = await queue.getJobState(jobId);
      if (s === 'completed' || s === 'failed') break;
      await sleep(250);
    }
    if (!died) await Promise.race([a.exited.then((d) => (died = d)), sleep(2000)]);
    assert.ok(died, `worker A did not stop (job ${await queue.getJobState(jobId)}, ORUs received ${rx.received().length}): ${a.stderr().slice(-2000)}`);
    assert.equal(died.signal, 'SIGKILL', `worker A should have killed itself after the ACK: ${JSON.stringify(died)} ${a.stderr().slice(-3000)}`);
    children.delete(a.child);
    assert.equal(rx.received().length, 1, 'the EMR got the ORU before the worker died');
    const mid = await states.get(jobId);
    assert.equal(mid?.stage, 'send-oru', JSON.stringify(mid));
    assert.ok(mid?.oruSending, 'the "sending" record survived the crash');

    const b = spawnWorker();
    const deadline = Date.now() + 120_000;
    let state = '';
    while (Date.now() < deadline) {
      state = await queue.getJobState(jobId);
      if (state === 'completed' || state === 'failed') break;
      await sleep(250);
    }
    assert.equal(state, 'completed', `${JSON.stringify(await states.get(jobId))} ${b.stderr().slice(-3000)}`);
    const received = rx.received();
    assert.equal(received.length, 1, 'exactly one ORU at the EMR');
    const msh10 = received[0]?.toString('latin1').split('\r')[0]?.split('|')[9];
    const cp = await states.get(jobId);
    const out = cp?.outputs['send-oru'];
    assert.ok(out && 'controlId' in out, JSON.stringify(out));
    assert.equal(out.controlId, msh10);
    assert.equal(out.ackCode, 'unknown');
    assert.match(out.deliveryUnknown ?? '', new RegExp(`check the EMR for MSH-10 ${msh10}`));
    assert.equal(cp?.oruSending, undefined);
    b.child.kill('SIGTERM');
  });
});
