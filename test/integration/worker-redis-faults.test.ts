/**
 * A worker process must never die of a job, and a Redis blip must cost no attempt (issue 11, item 3). A real
 * `ctgate worker` process against its own redis-server and Orthanc: a job's hash deleted mid-stage leaves the
 * process running and taking the next job; a Redis restart while a job is in flight ends with the job completed
 * and no attempt counted (neither BullMQ's nor the runner's per stage).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { OwnRedis } from '../helpers/redis.js';
import { killWorkers, sleep, spawnWorker as spawnCtgateWorker, uploadStudy, WorkerQueue, waitFor } from '../helpers/worker-process.js';

const QUEUE = 'screening';

describe('worker process under Redis faults (own redis-server, Orthanc, models)', () => {
  const orthanc = new TestOrthanc();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-redis-faults-'));
  let own: OwnRedis;
  let jq: WorkerQueue;

  before(async () => {
    own = new OwnRedis(await freePort(), { appendonly: true, dir });
    await Promise.all([own.start(), orthanc.start()]);
    jq = new WorkerQueue(own.url, prefix, { quiet: true });
  });

  after(async () => {
    killWorkers();
    await jq?.close();
    await own?.stop();
    await orthanc.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const spawnWorker = () =>
    spawnCtgateWorker({
      CTGATE_REDIS_URL: own.url,
      CTGATE_REDIS_PREFIX: prefix,
      CTGATE_PACS_URL: orthanc.dicomweb,
      CTGATE_STUDY_POLL_MS: '200',
      CTGATE_STUDY_STABLE_MS: '300',
      CTGATE_STUDY_CHECK_MS: '60000',
      CTGATE_STUDY_SLEEP_MS: '500',
      CTGATE_STAGE_BACKOFF_MS: '300',
      CTGATE_STAGE_BACKOFF_MAX_MS: '1000',
      CTGATE_RETRIEVE_CONCURRENCY: '1',
      CTGATE_MODEL_THREADS: '2',
      CTGATE_LOG_LEVEL: 'warn',
    });

  it("keeps running and takes the next job when a job's key is deleted mid-stage", async () => {
    await uploadStudy(orthanc, { seed: 601, kind: 'covid', accession: 'ACC-RF1', size: [128, 128, 80] });
    const w = spawnWorker();
    const { child, stderr } = w;
    try {
      const first = await jq.addJob('ACC-RF1', 'PLC-RF1');
      // Mid-stage: retrieve or analyze started (their progress updates are fired and forgotten).
      await waitFor(
        'the first job in retrieve/analyze',
        async () => {
          const st = await jq.states.get(first);
          return st && ((st.stage === 'retrieve' && (st.attempts.retrieve ?? 0) >= 1) || (st.stage === 'analyze' && (st.attempts.analyze ?? 0) >= 1));
        },
        120_000,
        { worker: w, everyMs: 10 },
      );
      assert.equal(await jq.redis.del(`${prefix}:bull:${QUEUE}:${first}`), 1, 'the job hash was there');
      const second = await jq.addJob('ACC-RF1', 'PLC-RF2');
      const state = await waitFor(
        'the second job to finish',
        async () => {
          const s = await jq.queue.getJobState(second);
          return s === 'completed' || s === 'failed' ? s : null;
        },
        180_000,
        { worker: w, everyMs: 10 },
      );
      assert.equal(state, 'completed', JSON.stringify(await jq.states.get(second)));
      assert.equal(child.exitCode, null, `the worker process is alive: ${stderr()}`);
      assert.equal(child.signalCode, null);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('completes a job across a Redis restart with no attempt consumed', async () => {
    const w = spawnWorker();
    const { child, stderr } = w;
    try {
      // The study is not in the PACS yet: the job polls in wait-for-study (no Redis calls) while Redis goes down.
      const jobId = await jq.addJob('ACC-RF2', 'PLC-RF3');
      await waitFor('the job waiting for its study', async () => (await jq.states.get(jobId))?.stage === 'wait-for-study', 120_000, {
        worker: w,
        everyMs: 10,
      });
      await sleep(1500); // AOF fsyncs every second
      await own.stop();
      // The study arrives while Redis is down: wait-for-study finishes and its checkpoint write meets no Redis.
      await uploadStudy(orthanc, { seed: 602, kind: 'covid', accession: 'ACC-RF2' });
      await sleep(3000);
      await own.start();
      const state = await waitFor(
        'the job to finish',
        async () => {
          const s = await jq.queue.getJobState(jobId).catch(() => null);
          return s === 'completed' || s === 'failed' ? s : null;
        },
        180_000,
        { worker: w, everyMs: 10 },
      );
      const job = await jq.queue.getJob(jobId);
      const st = await jq.states.get(jobId);
      assert.equal(state, 'completed', `${job?.failedReason} ${JSON.stringify(st)} ${stderr()}`);
      // BullMQ counts the attempt that completes the job too: exactly one, and no failure recorded on the way.
      assert.equal(job?.attemptsMade, 1, `no BullMQ attempt consumed: ${JSON.stringify(job?.stacktrace)} ${stderr()}`);
      assert.deepEqual(job?.stacktrace ?? [], []);
      assert.equal(job?.failedReason, undefined);
      assert.equal(st?.stage, 'done');
      for (const s of ['retrieve', 'analyze', 'write-seg'] as const) assert.equal(st?.attempts[s], 1, `${s} ran once`);
      assert.equal(child.exitCode, null, `the worker process is alive: ${stderr()}`);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
