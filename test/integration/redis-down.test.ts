import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ackField, MllpClient, orm } from '../helpers/hl7.js';
import { OwnRedis } from '../helpers/redis.js';

describe('Redis down: NAK so the sender retries, then AA once Redis is back', () => {
  const redis = new OwnRedis(16000 + (process.pid % 1000));
  let gw: TestGateway;
  before(async () => {
    await redis.start();
    gw = await startTestGateway({ CTGATE_REDIS_URL: redis.url, CTGATE_REDIS_TIMEOUT_MS: '300' });
  });
  after(async () => {
    await gw.cleanup();
    await redis.stop();
  });

  it('answers AE (original mode) and CE (enhanced mode) with ERR 207 while Redis is down, and stores nothing', async () => {
    await redis.stop();
    await new Promise((r) => setTimeout(r, 100));
    const c = await MllpClient.connect(gw.mllp.port);
    c.send(orm({ controlId: 'DOWN-1', placer: 'PL-DOWN' }));
    const ae = await c.nextAck(5000);
    assert.equal(ackField(ae, 'MSA', 1), 'AE');
    assert.match(ackField(ae, 'ERR', 3), /^207\^/);
    assert.match(ackField(ae, 'ERR', 8), /resend/);
    c.send(orm({ controlId: 'DOWN-2', placer: 'PL-DOWN2', acceptAck: 'AL', appAck: 'NE' }));
    assert.equal(ackField(await c.nextAck(5000), 'MSA', 1), 'CE');
    // Garbage while Redis is down cannot be dead-lettered either: it gets AE, not AR, so it is not lost.
    c.send(orm({ controlId: 'DOWN-3', type: 'ORU^R01' }));
    assert.equal(ackField(await c.nextAck(5000), 'MSA', 1), 'AE');
    c.close();
  });

  it('accepts the resent order once Redis is back, exactly once', async () => {
    await redis.start();
    const deadline = Date.now() + 10_000;
    let code = '';
    const c = await MllpClient.connect(gw.mllp.port);
    while (Date.now() < deadline) {
      c.send(orm({ controlId: 'DOWN-1', placer: 'PL-DOWN' }));
      code = ackField(await c.nextAck(5000), 'MSA', 1);
      if (code === 'AA') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(code, 'AA');
    c.send(orm({ controlId: 'DOWN-1', placer: 'PL-DOWN' }));
    assert.equal(ackField(await c.nextAck(5000), 'MSA', 1), 'AA');
    c.close();
    const jobs = await gw.queue.getJobs(['waiting'], 0, -1);
    assert.deepEqual(
      jobs.map((j) => j.data.order.placerOrderNumber),
      ['PL-DOWN'],
      'the messages NAKed while down left no trace, the resent one made one job',
    );
  });
});
