/**
 * A worker's death is not the job's fault, but a study that kills its worker every time must not go round for
 * ever. Real `ctgate worker` processes, SIGKILLed while their job hangs in write-fhir (the Medplum FHIR server
 * SIGSTOPped: it takes the connection and never answers), with Redis, Orthanc and python-hl7's receiver.
 * - Killed four times in the stage (more than BullMQ's own stall limit used to allow), the job still completes,
 *   with one ORU.
 * - Killed in the stage as many times as CTGATE_STAGE_ATTEMPTS, it fails visibly, saying so, on its next start.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type Receiver, running, startReceiver } from '../../src/cli/local-peers/oru-receiver.js';
import { type JobState, JobStateStore, LockLostError, newJobState } from '../../src/jobs/job-state.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';
import { fastWorkerEnv, killWorkers, spawnWorker, uploadStudy, type WorkerProcess, WorkerQueue, waitFor } from '../helpers/worker-process.js';

describe('workers that die in a stage (real worker processes, FHIR server paused)', () => {
  const orthanc = new TestOrthanc();
  const fhir = new TestFhirServer();
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let jq: WorkerQueue;
  let rx: Receiver;

  const env = (attempts: number): Record<string, string> =>
    fastWorkerEnv(
      { redisUrl: REDIS_URL, prefix, pacsUrl: orthanc.dicomweb, fhirUrl: fhir.url, oruPort: rx.port },
      {
        CTGATE_REDIS_REQUIRE_AOF: 'false',
        CTGATE_FHIR_TIMEOUT_MS: '120000',
        CTGATE_STAGE_ATTEMPTS: String(attempts),
        CTGATE_WORKER_STALLED_INTERVAL_MS: '500',
        CTGATE_LOG_LEVEL: 'warn',
      },
    );

  /** Kills the job's worker `times` times, each once the job has started write-fhir again (its nth attempt). */
  async function killInWriteFhir(jobId: string, attempts: number, times: number): Promise<WorkerProcess> {
    let w = spawnWorker(env(attempts));
    for (let n = 1; n <= times; n++) {
      await waitFor(
        `write-fhir attempt ${n}`,
        async () => {
          const s = await jq.states.get(jobId);
          return s?.stage === 'write-fhir' && s.attempts['write-fhir'] === n && (await jq.queue.getJobState(jobId)) === 'active';
        },
        180_000,
        { worker: w },
      );
      // The request is on its way to the paused server (the checkpoint is written just before it).
      await new Promise((r) => setTimeout(r, 300));
      w.child.kill('SIGKILL');
      await w.exited;
      w = spawnWorker(env(attempts));
    }
    return w;
  }

  before(async () => {
    await requireRedis();
    await Promise.all([orthanc.start(), fhir.start()]);
    jq = new WorkerQueue(REDIS_URL, prefix);
    rx = await startReceiver();
  });

  after(async () => {
    fhir.signal('SIGCONT');
    killWorkers();
    for (const p of running) p.kill('SIGTERM');
    await jq?.close();
    await orthanc.stop();
    await fhir.stop();
    await deleteKeys(prefix);
  });

  it('a worker that lost the job’s lock cannot write its checkpoint (fenced by the lock token)', async () => {
    const store = new JobStateStore(jq.redis, prefix, 1);
    const lockKey = `${prefix}:bull:test:fence-job:lock`;
    const activeKey = `${prefix}:bull:test:active`;
    const lock = (token: string) => ({ lockKey, activeKey, jobId: 'fence-job', lockMs: 10_000, token });
    await jq.redis.set(lockKey, 'token-of-B', 'PX', 10_000);
    await jq.redis.lpush(activeKey, 'fence-job');
    const st: JobState = newJobState('fence-job');
    await store.put(st, lock('token-of-B'));
    const stale = { ...st, stage: 'send-oru' as const };
    await assert.rejects(store.put(stale, lock('token-of-A')), LockLostError);
    assert.equal((await store.get('fence-job'))?.stage, 'wait-for-study');
    // A lapsed lock on a job still active (nobody took it over) is taken back by its worker ...
    await jq.redis.del(lockKey);
    await store.put({ ...st, stage: 'retrieve' }, lock('token-of-B'));
    assert.equal(await jq.redis.get(lockKey), 'token-of-B');
    assert.equal((await store.get('fence-job'))?.stage, 'retrieve');
    // ... but not once the job has left the active list (moved back to wait, or finished by another worker).
    await jq.redis.del(lockKey);
    await jq.redis.lrem(activeKey, 0, 'fence-job');
    await assert.rejects(store.put(stale, lock('token-of-B')), LockLostError);
    assert.equal(await jq.redis.get(lockKey), null);
    assert.equal((await store.get('fence-job'))?.stage, 'retrieve');
  });

  it('completes after four deaths in write-fhir, with one ORU', async () => {
    await uploadStudy(orthanc, { seed: 621, kind: 'covid', accession: 'ACC-D1' });
    fhir.signal('SIGSTOP');
    const jobId = await jq.addJob('ACC-D1', 'PLC-D1');
    const w = await killInWriteFhir(jobId, 10, 4);
    try {
      fhir.signal('SIGCONT');
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 180_000), 'completed', (await jq.queue.getJob(jobId))?.failedReason);
      const st = await jq.states.get(jobId);
      assert.equal(st?.attempts['write-fhir'], 5);
      assert.equal(st?.attempts.analyze, 1, `the analysis ran once: ${JSON.stringify(st?.timingsMs)}`);
      assert.equal(rx.received().filter((m) => m.toString().includes('|PLC-D1')).length, 1);
    } finally {
      w.child.kill('SIGKILL');
    }
  });

  it('fails visibly once the stage was started CTGATE_STAGE_ATTEMPTS times without finishing', async () => {
    await uploadStudy(orthanc, { seed: 622, kind: 'covid', accession: 'ACC-D2' });
    fhir.signal('SIGSTOP');
    const jobId = await jq.addJob('ACC-D2', 'PLC-D2');
    const w = await killInWriteFhir(jobId, 2, 2);
    try {
      assert.equal(await jq.waitForJob(jobId, (s) => s === 'completed' || s === 'failed', 60_000), 'failed');
      const job = await jq.queue.getJob(jobId);
      assert.match(job?.failedReason ?? '', /^write-fhir: the stage was started 2 times without finishing \(the worker died in it each time\)/);
      const st = await jq.states.get(jobId);
      assert.equal(st?.lastError?.stage, 'write-fhir');
      assert.match(st?.lastError?.message ?? '', /started 2 times without finishing/);
      assert.equal(rx.received().filter((m) => m.toString().includes('|PLC-D2')).length, 0, 'no ORU for a failed job');
    } finally {
      fhir.signal('SIGCONT');
      w.child.kill('SIGKILL');
    }
  });
});
