/**
 * A worker process must never die of a job, and a Redis blip must cost no attempt (issue 11, item 3). A real
 * `ctgate worker` process against its own redis-server and Orthanc: a job's hash deleted mid-stage leaves the
 * process running and taking the next job; a Redis restart while a job is in flight ends with the job completed
 * and no attempt counted (neither BullMQ's nor the runner's per stage).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { JobStateStore } from '../../src/jobs/job-state.js';
import { jobIdFor, type ScreeningJobData } from '../../src/jobs/queue.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { freePort, TestOrthanc } from '../helpers/orthanc.js';
import { OwnRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';

const QUEUE = 'screening';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('worker process under Redis faults (own redis-server, Orthanc, models)', () => {
  const orthanc = new TestOrthanc();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-redis-faults-'));
  let own: OwnRedis;
  let redis: Redis;
  let queue: Queue<ScreeningJobData>;
  let states: JobStateStore;
  const children = new Set<ChildProcess>();

  before(async () => {
    own = new OwnRedis(await freePort(), { appendonly: true, dir });
    await Promise.all([own.start(), orthanc.start()]);
    redis = new Redis(own.url, { maxRetriesPerRequest: null });
    redis.on('error', () => {});
    queue = new Queue<ScreeningJobData>(QUEUE, { connection: redis, prefix: `${prefix}:bull` });
    queue.on('error', () => {});
    states = new JobStateStore(redis, prefix, 1);
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await queue?.close();
    redis?.disconnect();
    await own?.stop();
    await orthanc.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function spawnWorker(extra: Record<string, string> = {}) {
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'worker'], {
      env: {
        ...process.env,
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
        ...extra,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr = (stderr + d).slice(-8000);
    });
    return { child, stderr: () => stderr };
  }

  async function uploadStudy(seed: number, accession: string, slices = 52) {
    const p = generateChestCt({ seed, kind: 'covid', size: [128, 128, slices], spacing: [2.6, 2.6, 5] });
    const series = writeCtSeries(p.volume, { seed, accessionNumber: accession, patientId: 'MRN000123', seriesDescription: 'synthetic covid' });
    await orthanc.client().store(series.files.map((f) => f.bytes));
  }

  async function addJob(accession: string, placer: string): Promise<string> {
    const order = sampleOrder({ accessionNumber: accession, placerOrderNumber: placer });
    const jobId = jobIdFor(order.sender, placer);
    await queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: `MSG-${placer}` }, { jobId, attempts: 3 });
    return jobId;
  }

  async function waitFor<T>(what: string, f: () => Promise<T | undefined | null | false>, ms: number, child?: ChildProcess, log?: () => string): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await f();
      if (v) return v;
      if (child && child.exitCode !== null) throw new Error(`the worker exited (${child.exitCode}) while waiting for ${what}: ${log?.()}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${log?.()}`);
      await sleep(10);
    }
  }

  it("keeps running and takes the next job when a job's key is deleted mid-stage", async () => {
    await uploadStudy(601, 'ACC-RF1', 80);
    const { child, stderr } = spawnWorker();
    try {
      const first = await addJob('ACC-RF1', 'PLC-RF1');
      // Mid-stage: retrieve or analyze started (their progress updates are fired and forgotten).
      await waitFor(
        'the first job in retrieve/analyze',
        async () => {
          const st = await states.get(first);
          return st && ((st.stage === 'retrieve' && (st.attempts.retrieve ?? 0) >= 1) || (st.stage === 'analyze' && (st.attempts.analyze ?? 0) >= 1));
        },
        120_000,
        child,
        stderr,
      );
      assert.equal(await redis.del(`${prefix}:bull:${QUEUE}:${first}`), 1, 'the job hash was there');
      const second = await addJob('ACC-RF1', 'PLC-RF2');
      const state = await waitFor(
        'the second job to finish',
        async () => {
          const s = await queue.getJobState(second);
          return s === 'completed' || s === 'failed' ? s : null;
        },
        180_000,
        child,
        stderr,
      );
      assert.equal(state, 'completed', JSON.stringify(await states.get(second)));
      assert.equal(child.exitCode, null, `the worker process is alive: ${stderr()}`);
      assert.equal(child.signalCode, null);
    } finally {
      child.kill('SIGKILL');
      children.delete(child);
    }
  });

  it('completes a job across a Redis restart with no attempt consumed', async () => {
    const { child, stderr } = spawnWorker();
    try {
      // The study is not in the PACS yet: the job polls in wait-for-study (no Redis calls) while Redis goes down.
      const jobId = await addJob('ACC-RF2', 'PLC-RF3');
      await waitFor('the job waiting for its study', async () => (await states.get(jobId))?.stage === 'wait-for-study', 120_000, child, stderr);
      await sleep(1500); // AOF fsyncs every second
      await own.stop();
      // The study arrives while Redis is down: wait-for-study finishes and its checkpoint write meets no Redis.
      await uploadStudy(602, 'ACC-RF2');
      await sleep(3000);
      await own.start();
      const state = await waitFor(
        'the job to finish',
        async () => {
          const s = await queue.getJobState(jobId).catch(() => null);
          return s === 'completed' || s === 'failed' ? s : null;
        },
        180_000,
        child,
        stderr,
      );
      const job = await queue.getJob(jobId);
      const st = await states.get(jobId);
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
      children.delete(child);
    }
  });
});
