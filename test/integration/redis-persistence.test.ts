/**
 * `serve` and a Redis that does not persist: with appendonly no every acknowledged order vanishes when Redis
 * restarts. ctgate checks (CONFIG GET appendonly, or INFO persistence where CONFIG is disabled), refuses to start
 * on such a Redis unless CTGATE_REDIS_REQUIRE_AOF=false, NAKs orders when Redis comes back without AOF, and
 * reports persistence on /ready. Each Redis here is a redis-server of the test's own, on a free port.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jobIdFor } from '../../src/domain/job.js';
import { startTestGateway, TEST_TOKEN } from '../helpers/gateway.js';
import { ackField, MllpClient, mllpSend, orm } from '../helpers/hl7.js';
import { freePort } from '../helpers/orthanc.js';
import { OwnRedis } from '../helpers/redis.js';

const NO_CONFIG = ['--rename-command', 'CONFIG', ''];

async function readyBody(httpPort: number): Promise<{ checks: { redis: Record<string, unknown> } }> {
  const r = await fetch(`http://127.0.0.1:${httpPort}/ready`);
  return (await r.json()) as { checks: { redis: Record<string, unknown> } };
}

/** `ctgate serve` as a child process; resolves when /health answers, or with the exit code and stderr. */
async function serve(redisUrl: string, env: Record<string, string> = {}) {
  const [mllpPort, httpPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ['bin/ctgate.mjs', 'serve'], {
    env: {
      ...process.env,
      CTGATE_REDIS_URL: redisUrl,
      CTGATE_REDIS_PREFIX: 'ctgate-test-aof',
      CTGATE_MLLP_PORT: String(mllpPort),
      CTGATE_HTTP_PORT: String(httpPort),
      CTGATE_API_TOKEN: TEST_TOKEN,
      CTGATE_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const code = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(r, 200))]);
    if (code !== undefined) return { started: false as const, code, stderr };
    try {
      if ((await fetch(`http://127.0.0.1:${httpPort}/health`)).ok) break;
    } catch {}
  }
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  return { started: true as const, mllpPort, httpPort, stderr: () => stderr, stop };
}

describe('Redis persistence: serve refuses a Redis without AOF', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ctgate-aof-'));
  const servers: OwnRedis[] = [];
  const own = async (opts: ConstructorParameters<typeof OwnRedis>[1]) => {
    const r = new OwnRedis(await freePort(), opts);
    servers.push(r);
    await r.start();
    return r;
  };
  let aof: OwnRedis;
  let noAof: OwnRedis;
  before(async () => {
    aof = await own({ appendonly: true, dir: mkdtempSync(join(dir, 'aof-')) });
    noAof = await own({ appendonly: false });
  });
  after(async () => {
    for (const r of servers) await r.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts against redis-server --appendonly yes, acknowledges orders and reports the AOF on /ready', async () => {
    const gw = await serve(aof.url);
    assert.ok(gw.started, `serve did not start: ${!gw.started && gw.stderr}`);
    try {
      const [ack] = await mllpSend(gw.mllpPort, [orm({ controlId: 'AOF-1' })]);
      assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
      const { checks } = await readyBody(gw.httpPort);
      assert.equal(checks.redis.status, 'ok');
      assert.deepEqual(checks.redis.persistence, { aof: true, required: true, via: 'CONFIG', fsync: 'everysec' });
    } finally {
      await gw.stop();
    }
  });

  it('refuses to start against redis-server --appendonly no, naming the problem and the opt-out', async () => {
    const gw = await serve(noAof.url);
    assert.equal(gw.started, false, 'serve started on a Redis that does not persist');
    if (gw.started) return;
    assert.equal(gw.code, 78);
    assert.match(gw.stderr, /refusing to start: Redis does not persist: its append-only file is off \(appendonly no\)/);
    assert.match(gw.stderr, /appendonly yes/);
    assert.match(gw.stderr, /CTGATE_REDIS_REQUIRE_AOF=false/);
  });

  it('starts there with CTGATE_REDIS_REQUIRE_AOF=false, and /ready says Redis does not persist', async () => {
    const gw = await startTestGateway({ CTGATE_REDIS_URL: noAof.url, CTGATE_REDIS_REQUIRE_AOF: 'false' });
    try {
      const c = await MllpClient.connect(gw.mllp.port);
      c.send(orm({ controlId: 'OPT-OUT-1' }));
      assert.equal(ackField(await c.nextAck(), 'MSA', 1), 'AA');
      c.close();
      const { checks } = await readyBody(gw.httpPort);
      assert.equal(checks.redis.status, 'ok');
      assert.deepEqual(checks.redis.persistence, { aof: false, required: false, via: 'CONFIG', fsync: 'everysec' });
      assert.match(String(checks.redis.warning), /does not persist/);
    } finally {
      await gw.cleanup();
    }
  });

  it('asks INFO persistence where CONFIG is disabled: starts with AOF on, refuses with it off', async () => {
    const infoAof = await own({ appendonly: true, dir: mkdtempSync(join(dir, 'info-')), extraArgs: NO_CONFIG });
    const infoNoAof = await own({ appendonly: false, extraArgs: NO_CONFIG });
    const gw = await startTestGateway({ CTGATE_REDIS_URL: infoAof.url, CTGATE_REDIS_REQUIRE_AOF: 'true' });
    try {
      const { checks } = await readyBody(gw.httpPort);
      assert.equal(checks.redis.status, 'ok');
      assert.deepEqual(checks.redis.persistence, { aof: true, required: true, via: 'INFO' });
    } finally {
      await gw.cleanup();
    }
    await assert.rejects(startTestGateway({ CTGATE_REDIS_URL: infoNoAof.url, CTGATE_REDIS_REQUIRE_AOF: 'true' }), (e: Error) => {
      assert.equal(e.name, 'RedisPersistenceError');
      assert.match(e.message, /appendonly no, from INFO persistence/);
      return true;
    });
  });

  it('NAKs orders (AE) while Redis is back without AOF, and /ready fails; AA again once it persists', async () => {
    const port = await freePort();
    const data = mkdtempSync(join(dir, 'restart-'));
    // appendfsync always: the order written before the SIGKILL below is on disk.
    const persisting = () => new OwnRedis(port, { appendonly: true, dir: data, extraArgs: ['--appendfsync', 'always'] });
    let redis = persisting();
    servers.push(redis);
    await redis.start();
    const gw = await startTestGateway({ CTGATE_REDIS_URL: redis.url, CTGATE_REDIS_REQUIRE_AOF: 'true', CTGATE_REDIS_TIMEOUT_MS: '300' });
    const c = await MllpClient.connect(gw.mllp.port);
    const ackFor = async (controlId: string) => {
      c.send(orm({ controlId, placer: `PL-${controlId}` }));
      return c.nextAck(5000);
    };
    /** Sends new orders until an ACK matches (the gateway reconnects, then checks again: AE "store unavailable" first). */
    const until = async (match: (ack: string) => boolean, prefix: string) => {
      const deadline = Date.now() + 15_000;
      let ack = '';
      for (let i = 0; Date.now() < deadline; i++) {
        ack = await ackFor(`${prefix}-${i}`);
        if (match(ack)) return ack;
        await new Promise((r) => setTimeout(r, 200));
      }
      return ack;
    };
    try {
      assert.equal(ackField(await ackFor('RS-1'), 'MSA', 1), 'AA');
      await redis.stop();
      // Restarted with other settings: the same port, no AOF.
      redis = new OwnRedis(port, { appendonly: false });
      servers.push(redis);
      await redis.start();
      const ae = await until((a) => ackField(a, 'MSA', 1) !== 'AE' || /persist/.test(ackField(a, 'ERR', 8)), 'RS-NOAOF');
      assert.equal(ackField(ae, 'MSA', 1), 'AE', 'an order was acknowledged on a Redis that does not persist');
      assert.match(ackField(ae, 'ERR', 3), /^207\^/);
      assert.match(ackField(ae, 'ERR', 8), /Redis does not persist \(appendonly no\); message not stored, please resend/);
      const ready = await fetch(`http://127.0.0.1:${gw.httpPort}/ready`);
      assert.equal(ready.status, 503);
      const body = (await ready.json()) as { failed: string[]; checks: { redis: Record<string, unknown> } };
      assert.ok(body.failed.includes('redis'));
      assert.match(String(body.checks.redis.error), /CTGATE_REDIS_REQUIRE_AOF=false/);
      await redis.stop();
      redis = persisting();
      servers.push(redis);
      await redis.start();
      assert.equal(ackField(await until((a) => ackField(a, 'MSA', 1) === 'AA', 'RS-AOF'), 'MSA', 1), 'AA');
      assert.ok(await gw.queue.getJob(jobIdFor({ application: 'EPIC', facility: 'GENHOSP' }, 'PL-RS-1')), 'the first order survived the restarts in the AOF');
    } finally {
      c.close();
      await gw.cleanup();
    }
  });
});
