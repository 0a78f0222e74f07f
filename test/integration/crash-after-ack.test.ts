import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { jobIdFor } from '../../src/domain/job.js';
import { TEST_TOKEN } from '../helpers/gateway.js';
import { ackField, mllpSend, orm } from '../helpers/hl7.js';
import { deleteKeys, REDIS_URL, requireRedis } from '../helpers/redis.js';

async function waitForPort(url: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gateway did not answer ${url} within ${ms} ms`);
}

function startServe(env: Record<string, string>) {
  // The shared test Redis runs with appendonly no (see redis-persistence.test.ts).
  const child = spawn(process.execPath, ['bin/ctgate.mjs', 'serve'], {
    env: { ...process.env, CTGATE_REDIS_REQUIRE_AOF: 'false', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return { child, stderr: () => stderr };
}

describe('CTGATE_PROCESSES: several gateway processes share the ports', () => {
  it('acknowledges orders through the shared port and stops on SIGTERM', async () => {
    await requireRedis();
    const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
    const mllpPort = 25000 + (process.pid % 5000);
    const httpPort = mllpPort + 1;
    const { child, stderr } = startServe({
      CTGATE_REDIS_URL: REDIS_URL,
      CTGATE_REDIS_PREFIX: prefix,
      CTGATE_MLLP_PORT: String(mllpPort),
      CTGATE_HTTP_PORT: String(httpPort),
      CTGATE_API_TOKEN: TEST_TOKEN,
      CTGATE_PROCESSES: '2',
    });
    try {
      await waitForPort(`http://127.0.0.1:${httpPort}/health`, 30_000);
      const acks = await mllpSend(
        mllpPort,
        Array.from({ length: 6 }, (_, i) => orm({ controlId: `CL-${i}`, placer: `PL-CL-${i}` })),
      );
      assert.deepEqual(
        acks.map((a) => ackField(a, 'MSA', 1)),
        ['AA', 'AA', 'AA', 'AA', 'AA', 'AA'],
      );
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      assert.equal(code, 0, stderr().slice(-500));
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await deleteKeys(prefix);
    }
  });
});

describe('durability: the gateway killed right after the ACK', () => {
  it('leaves the acknowledged order in the queue', async () => {
    await requireRedis();
    const prefix = `ctgate-test-${randomBytes(4).toString('hex')}`;
    const mllpPort = 20000 + (process.pid % 5000);
    const httpPort = mllpPort + 1;
    const child = spawn(process.execPath, ['bin/ctgate.mjs', 'serve'], {
      env: {
        ...process.env,
        CTGATE_REDIS_URL: REDIS_URL,
        CTGATE_REDIS_PREFIX: prefix,
        CTGATE_MLLP_PORT: String(mllpPort),
        CTGATE_HTTP_PORT: String(httpPort),
        CTGATE_API_TOKEN: TEST_TOKEN,
        // The shared test Redis runs with appendonly no: what is checked here is the write before the ACK.
        CTGATE_REDIS_REQUIRE_AOF: 'false',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    try {
      await waitForPort(`http://127.0.0.1:${httpPort}/health`, 20_000);
      const [ack] = await mllpSend(mllpPort, [orm({ controlId: 'KILL-1', placer: 'PL-KILL' })]);
      assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
      child.kill('SIGKILL');
      await once(child, 'exit');
      const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
      const queue = new Queue(process.env.CTGATE_QUEUE_NAME ?? 'screening', { connection, prefix: `${prefix}:bull` });
      const job = await queue.getJob(jobIdFor({ application: 'EPIC', facility: 'GENHOSP' }, 'PL-KILL'));
      assert.ok(job, `job survives the crash (gateway log: ${stderr.slice(-500)})`);
      assert.equal(await job.getState(), 'waiting');
      assert.equal(job.data.order.placerOrderNumber, 'PL-KILL');
      await queue.close();
      connection.disconnect();
      assert.doesNotMatch(stderr, /MRN0001|TEST\^PATIENT|PATIENT/, 'no PHI in the gateway log');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await deleteKeys(prefix);
    }
  });
});
