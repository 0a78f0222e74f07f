/**
 * A worker SIGKILLed mid-job: another worker resumes the job in under 15 s (issue 11, item 6; BullMQ's lock and
 * stalled-job check, CTGATE_WORKER_LOCK_MS and CTGATE_WORKER_STALLED_INTERVAL_MS). Two real `ctgate worker`
 * processes on their own redis-server; the PACS is a stub whose study never arrives, so the job stays in
 * wait-for-study, polling, when its worker is killed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { jobIdFor } from '../../src/domain/job.js';
import { freePort } from '../helpers/orthanc.js';
import { OwnRedis } from '../helpers/redis.js';
import { sampleOrder } from '../helpers/result-context.js';
import { killWorkers, sleep, spawnWorker as spawnCtgateWorker, WorkerQueue, waitFor } from '../helpers/worker-process.js';

describe('a SIGKILLed worker’s job is resumed by another worker', () => {
  const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
  let own: OwnRedis;
  let jq: WorkerQueue;
  let pacs: Server;
  let pacsUrl = '';

  before(async () => {
    own = new OwnRedis(await freePort());
    await own.start();
    jq = new WorkerQueue(own.url, prefix);
    // Every QIDO answers "no such study".
    pacs = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/dicom+json' }).end('[]'));
    pacs.listen(0, '127.0.0.1');
    await once(pacs, 'listening');
    pacsUrl = `http://127.0.0.1:${(pacs.address() as AddressInfo).port}/dicom-web`;
  });

  after(async () => {
    killWorkers();
    await jq?.close();
    await own?.stop();
    pacs?.close();
  });

  const spawnWorker = () =>
    spawnCtgateWorker({
      CTGATE_REDIS_URL: own.url,
      CTGATE_REDIS_PREFIX: prefix,
      CTGATE_PACS_URL: pacsUrl,
      CTGATE_STUDY_POLL_MS: '200',
      CTGATE_STUDY_CHECK_MS: '120000',
      CTGATE_MODEL_THREADS: '1',
      CTGATE_LOG_LEVEL: 'info',
    });

  it('resumes the job in under 15 s', async () => {
    const a = spawnWorker();
    await waitFor('worker A ready', () => a.stderr().includes('worker.ready'), 120_000);
    const order = sampleOrder({ accessionNumber: 'ACC-RESUME', placerOrderNumber: 'PLC-RESUME' });
    const jobId = jobIdFor(order.sender, 'PLC-RESUME');
    await jq.queue.add('screen', { order, receivedAt: new Date().toISOString(), messageControlId: 'MSG-RESUME' }, { jobId, attempts: 3 });
    const first = await waitFor('A to start the job', async () => (await jq.states.get(jobId))?.updatedAt, 60_000);
    // B comes up while A holds the job (B idle, waiting for work).
    const b = spawnWorker();
    await waitFor('worker B ready', () => b.stderr().includes('worker.ready'), 120_000);
    assert.equal((await jq.states.get(jobId))?.updatedAt, first, 'A still has the job');
    assert.equal(await jq.queue.getJobState(jobId), 'active');
    await sleep(2000); // well into the check, after a lock renewal or so
    a.child.kill('SIGKILL');
    await once(a.child, 'exit');
    const killedAt = Date.now();
    // B's stage start writes the checkpoint again: that is the resume.
    await waitFor(
      'B to resume the job',
      async () => {
        const st = await jq.states.get(jobId);
        return st && st.updatedAt !== first;
      },
      60_000,
    );
    const resumeMs = Date.now() - killedAt;
    console.log(`# resumed ${resumeMs} ms after the SIGKILL`);
    assert.ok(resumeMs < 15_000, `resumed after ${resumeMs} ms`);
    assert.equal(b.child.exitCode, null);
  });
});
