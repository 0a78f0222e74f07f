import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jobIdFor } from '../../src/domain/job.js';
import { createLogger } from '../../src/observability/log.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { ackField, MllpClient, mllpSend, orm } from '../helpers/hl7.js';

const sender = { application: 'EPIC', facility: 'GENHOSP' };

describe('order intake over MLLP (mllp_send → gateway → Redis/BullMQ)', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway();
  });
  after(async () => {
    await gw.cleanup();
  });
  const send = (...messages: string[]) => mllpSend(gw.mllp.port, messages);
  const job = (placer: string) => gw.queue.getJob(jobIdFor(sender, placer));

  it('acknowledges a chest-CT order with AA only after the job is in the queue', async () => {
    const [ack] = await send(orm({ controlId: 'NW-1', placer: 'PL-1' }));
    assert.ok(ack);
    assert.equal(ackField(ack, 'MSA', 1), 'AA');
    assert.equal(ackField(ack, 'MSA', 2), 'NW-1');
    assert.equal(ackField(ack, 'MSH', 5), 'EPIC');
    assert.equal(ackField(ack, 'MSH', 6), 'GENHOSP');
    const j = await job('PL-1');
    assert.ok(j, 'job exists');
    assert.equal(await j.getState(), 'waiting');
    assert.equal(j.data.order.accessionNumber, 'A-PL-1');
    assert.equal(j.data.order.patient.identifiers[0]?.value, 'MRN0001');
    assert.ok(!String(j.id).includes('PL-1') && !String(j.id).includes('MRN'), 'job id carries no business or patient identifier');
  });

  it('creates nothing new for a resent message or the same order again', async () => {
    const msg = orm({ controlId: 'DUP-1', placer: 'PL-DUP' });
    const acks = await send(msg, msg, orm({ controlId: 'DUP-2', placer: 'PL-DUP' }));
    assert.deepEqual(
      acks.map((a) => ackField(a, 'MSA', 1)),
      ['AA', 'AA', 'AA'],
    );
    assert.match(ackField(acks[1] ?? '', 'MSA', 3), /resend/);
    assert.match(ackField(acks[2] ?? '', 'MSA', 3), /already received/);
    const jobs = await gw.queue.getJobs(['waiting'], 0, -1);
    assert.equal(jobs.filter((j) => j.data.order.placerOrderNumber === 'PL-DUP').length, 1);
  });

  it('acknowledges and records an order that is not a chest CT, without queueing it', async () => {
    const [ack] = await send(orm({ controlId: 'HEAD-1', placer: 'PL-HEAD', code: '70450', codeText: 'CT HEAD WO CONTRAST' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    assert.equal(await job('PL-HEAD'), undefined);
    const { items } = await gw.store.listMessages('ignored');
    const entry = items.find((i) => i.controlId === 'HEAD-1');
    assert.ok(entry);
    assert.match(entry.reason, /not a chest CT/);
    assert.equal((entry as Record<string, unknown>).raw, undefined, 'list view has no raw message');
  });

  it('acknowledges an ORM^O01 whose order detail is RXO, ODS, ODT or RQD with AA and records it as ignored', async () => {
    const details = {
      RXO: 'RXO|00904-2121^ACETAMINOPHEN 325MG TAB^NDC|325||MG',
      ODS: 'ODS|D||1023^REGULAR DIET^L',
      ODT: 'ODT|EARLY^EARLY TRAY^L',
      RQD: 'RQD|1|ITEM-77^GAUZE PADS^L|||4|BX',
    };
    const msgs = Object.entries(details).map(([seg, line]) => orm({ controlId: `DET-${seg}`, placer: `PL-DET-${seg}` }).replace(/\rOBR\|[^\r]*/, `\r${line}`));
    const acks = await send(...msgs);
    assert.deepEqual(
      acks.map((a) => [ackField(a, 'MSA', 1), ackField(a, 'MSA', 2)]),
      Object.keys(details).map((seg) => ['AA', `DET-${seg}`]),
    );
    const { items } = await gw.store.listMessages('ignored');
    for (const seg of Object.keys(details)) {
      assert.equal(await job(`PL-DET-${seg}`), undefined, `${seg}: no job`);
      const entry = items.find((i) => i.controlId === `DET-${seg}`);
      assert.ok(entry, `${seg}: recorded as ignored`);
      assert.match(entry.reason, new RegExp(`order detail is ${seg}.*not an imaging order`));
    }
    const { items: dead } = await gw.store.listMessages('dead-letter');
    assert.ok(!dead.some((i) => i.controlId.startsWith('DET-')), 'none dead-lettered');
  });

  it('rejects an ORU sent to the order port with AR and ERR 200, and dead-letters it', async () => {
    const [ack] = await send(orm({ controlId: 'ORU-1', type: 'ORU^R01^ORU_R01' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
    assert.match(ackField(ack ?? '', 'ERR', 3), /^200\^/);
    const { items } = await gw.store.listMessages('dead-letter');
    assert.ok(items.some((i) => i.controlId === 'ORU-1' && i.errorCode === 200));
  });

  it('rejects a message with missing content with AR, the field named in ERR', async () => {
    const [ack] = await send(orm({ controlId: 'BAD-1' }).replace(/\rPID\|[^\r]*/, ''));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
    assert.match(ackField(ack ?? '', 'ERR', 3), /^101\^/);
    assert.match(ackField(ack ?? '', 'ERR', 8), /PID/);
  });

  it('answers an unparsable message whose MSH can be found with AR', async () => {
    const [ack] = await send('MSH|^~\\&|EPIC|GENHOSP|CTGATE|RAD|20261127||ORM^O01|JUNK-1|P|2.5.1\r@@@ not a segment');
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
    assert.equal(ackField(ack ?? '', 'MSA', 2), 'JUNK-1');
  });

  it('cancels a queued order (CA) and refuses to re-create it', async () => {
    await send(orm({ controlId: 'C-NW', placer: 'PL-CA' }));
    assert.ok(await job('PL-CA'));
    const [ack] = await send(orm({ controlId: 'C-CA', placer: 'PL-CA', control: 'CA' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    assert.equal(await job('PL-CA'), undefined, 'job withdrawn from the queue');
    assert.equal((await gw.store.getOrder(jobIdFor(sender, 'PL-CA')))?.status, 'cancelled');
    await send(orm({ controlId: 'C-NW2', placer: 'PL-CA' }));
    assert.equal(await job('PL-CA'), undefined, 'a late resend of the NW does not bring it back');
  });

  it('records a cancel request for a running job instead of dropping it', async () => {
    await send(orm({ controlId: 'R-NW', placer: 'PL-RUN' }));
    const j = await job('PL-RUN');
    assert.ok(j);
    // Make the job active the way a worker would, by taking it with a lock token.
    const { Worker } = await import('bullmq');
    const connection = gw.redis.duplicate({ maxRetriesPerRequest: null, enableOfflineQueue: true });
    const worker = new Worker(gw.queue.name, null, { connection, prefix: `${gw.prefix}:bull`, autorun: false });
    let active = await worker.getNextJob('test-token');
    while (active && active.id !== j.id) active = await worker.getNextJob('test-token');
    assert.equal(await j.getState(), 'active');
    const [ack] = await send(orm({ controlId: 'R-DC', placer: 'PL-RUN', control: 'DC' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    assert.equal((await gw.store.getOrder(jobIdFor(sender, 'PL-RUN')))?.status, 'cancel-requested');
    await worker.close();
    connection.disconnect();
  });

  it('rejects a cancel for an unknown order with AR 204', async () => {
    const [ack] = await send(orm({ controlId: 'C-UNK', placer: 'PL-NEVER', control: 'CA' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
    assert.match(ackField(ack ?? '', 'ERR', 3), /^204\^/);
  });

  it('updates a queued order on XO', async () => {
    await send(orm({ controlId: 'X-NW', placer: 'PL-XO', accession: 'ACC-OLD' }));
    const [ack] = await send(orm({ controlId: 'X-XO', placer: 'PL-XO', control: 'XO', accession: 'ACC-NEW' }));
    assert.equal(ackField(ack ?? '', 'MSA', 1), 'AA');
    assert.equal((await job('PL-XO'))?.data.order.accessionNumber, 'ACC-NEW');
    const rec = await gw.store.getOrder(jobIdFor(sender, 'PL-XO'));
    assert.deepEqual(
      rec?.history.map((h) => h.control),
      ['NW', 'XO'],
    );
  });

  it('follows MSH-15 in enhanced mode: CA for AL, nothing for NE, nothing on success for ER', async () => {
    const c = await MllpClient.connect(gw.mllp.port);
    c.send(orm({ controlId: 'E-NE', acceptAck: 'NE', appAck: 'NE' }));
    c.send(orm({ controlId: 'E-ER', acceptAck: 'ER', appAck: 'NE' }));
    c.send(orm({ controlId: 'E-SU-BAD', acceptAck: 'SU', appAck: 'NE', type: 'ORU^R01' }));
    c.send(orm({ controlId: 'E-ER-BAD', acceptAck: 'ER', appAck: 'NE', type: 'ORU^R01' }));
    c.send(orm({ controlId: 'E-AL', acceptAck: 'AL', appAck: 'NE' }));
    const first = await c.nextAck();
    assert.equal(ackField(first, 'MSA', 2), 'E-ER-BAD');
    assert.equal(ackField(first, 'MSA', 1), 'CR');
    const second = await c.nextAck();
    assert.equal(ackField(second, 'MSA', 2), 'E-AL');
    assert.equal(ackField(second, 'MSA', 1), 'CA');
    c.close();
    assert.ok(await job('P-E-NE'), 'NE still queues the order');
  });

  it('reads a message split into single bytes and several messages in one packet', async () => {
    const c = await MllpClient.connect(gw.mllp.port);
    const frame = Buffer.from(`\x0b${orm({ controlId: 'S-1' })}\x1c\r`);
    for (const b of frame) {
      c.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(ackField(await c.nextAck(), 'MSA', 2), 'S-1');
    c.write(Buffer.concat(['S-2', 'S-3', 'S-4'].map((id) => Buffer.from(`\x0b${orm({ controlId: id })}\x1c\r`))));
    const ids = [await c.nextAck(), await c.nextAck(), await c.nextAck()].map((a) => ackField(a, 'MSA', 2));
    assert.deepEqual(ids, ['S-2', 'S-3', 'S-4'], 'ACKs come back in order');
    c.close();
  });

  it('answers each message as it arrives without waiting for the client to disconnect', async () => {
    const c = await MllpClient.connect(gw.mllp.port);
    for (let i = 0; i < 3; i++) {
      c.send(orm({ controlId: `LIVE-${i}` }));
      assert.equal(ackField(await c.nextAck(2000), 'MSA', 2), `LIVE-${i}`);
    }
    assert.equal(c.closed, false);
    c.close();
  });

  it('survives garbage between frames and keeps the connection usable', async () => {
    const c = await MllpClient.connect(gw.mllp.port);
    c.write(Buffer.from([0, 1, 2, 255, 254, 0x41, 0x42]));
    c.send(orm({ controlId: 'G-1' }));
    assert.equal(ackField(await c.nextAck(), 'MSA', 1), 'AA');
    c.close();
  });
});

describe('NAK reasons and logs carry no message text', () => {
  // A stray CR in PID-5 makes the rest of the name look like a segment; the NAK used to quote it.
  const strayCr = (controlId: string) => orm({ controlId }).replace('TEST^PATIENT', 'SMITHERSON^\rJOHNATHAN');

  it('NAKs a PID-5 split by a stray CR naming PID-5, without the name in the ACK, the log or the dead letter', async () => {
    const lines: string[] = [];
    const gw = await startTestGateway({}, { log: createLogger('debug', false, (l) => lines.push(l)) });
    try {
      const [ack] = await mllpSend(gw.mllp.port, [strayCr('CR-SPLIT-1')]);
      assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
      assert.match(ackField(ack ?? '', 'ERR', 2), /^PID\^1\^5$/);
      assert.match(ackField(ack ?? '', 'ERR', 8), /PID-5/);
      const logged = lines.join('\n');
      assert.match(logged, /CR-SPLIT-1/, 'the message was logged');
      for (const name of ['JOHNATHAN', 'SMITHERSON']) {
        assert.ok(!(ack ?? '').includes(name), `ACK quotes ${name}: ${ack}`);
        assert.ok(!logged.includes(name), `log quotes ${name}: ${logged}`);
      }
      const { items } = await gw.store.listMessages('dead-letter');
      const entry = items.find((i) => i.controlId === 'CR-SPLIT-1');
      assert.ok(entry, 'dead-lettered');
      assert.ok(!entry.reason.includes('JOHNATHAN'), entry.reason);
    } finally {
      await gw.cleanup();
    }
  });

  it('quotes the text only when CTGATE_HL7_REASON_VALUES is on', async () => {
    const gw = await startTestGateway({ CTGATE_HL7_REASON_VALUES: 'true' });
    try {
      const [ack] = await mllpSend(gw.mllp.port, [strayCr('CR-SPLIT-2')]);
      assert.equal(ackField(ack ?? '', 'MSA', 1), 'AR');
      assert.match(ackField(ack ?? '', 'ERR', 8), /JOHNATHA/);
    } finally {
      await gw.cleanup();
    }
  });
});

describe('MLLP listener limits', () => {
  it('rejects an oversized message with AR and stays usable', async () => {
    const gw = await startTestGateway({ CTGATE_MLLP_MAX_MESSAGE_BYTES: '4096' });
    try {
      const c = await MllpClient.connect(gw.mllp.port);
      c.send(orm({ controlId: 'BIG-1', extraSegments: [`NTE|1||${'x'.repeat(20_000)}`] }));
      const ack = await c.nextAck();
      assert.equal(ackField(ack, 'MSA', 1), 'AR');
      assert.equal(ackField(ack, 'MSA', 2), 'BIG-1');
      assert.match(ackField(ack, 'ERR', 8), /exceeds the 4096-byte limit/);
      c.send(orm({ controlId: 'SMALL-1' }));
      assert.equal(ackField(await c.nextAck(), 'MSA', 1), 'AA');
      c.close();
    } finally {
      await gw.cleanup();
    }
  });

  it('refuses a message with a million fields before parsing it, without stalling other senders', async () => {
    const gw = await startTestGateway({ CTGATE_REDIS_TIMEOUT_MS: '2000' });
    try {
      const heavy = await MllpClient.connect(gw.mllp.port);
      const other = await MllpClient.connect(gw.mllp.port);
      const started = performance.now();
      heavy.send(orm({ controlId: 'HEAVY-1', extraSegments: [`NTE|1${'|'.repeat(1_000_000)}`] }));
      other.send(orm({ controlId: 'LIGHT-1' }));
      const [h, o] = await Promise.all([heavy.nextAck(5000), other.nextAck(5000)]);
      assert.equal(ackField(h, 'MSA', 1), 'AR');
      assert.match(ackField(h, 'ERR', 8), /fields; at most/);
      assert.equal(ackField(o, 'MSA', 1), 'AA');
      assert.ok(performance.now() - started < 2000, 'both answered well within 2 s');
      heavy.close();
      other.close();
    } finally {
      await gw.cleanup();
    }
  });

  it('closes a connection whose frame never ends after the idle timeout, leaving others alone', async () => {
    const gw = await startTestGateway({ CTGATE_MLLP_IDLE_TIMEOUT_MS: '300' });
    try {
      const stuck = await MllpClient.connect(gw.mllp.port);
      stuck.write(`\x0b${orm({ controlId: 'NOEND' })}`);
      const other = await MllpClient.connect(gw.mllp.port);
      other.send(orm({ controlId: 'OK-1' }));
      assert.equal(ackField(await other.nextAck(), 'MSA', 1), 'AA');
      assert.equal(await stuck.waitClose(3000), true);
      other.close();
    } finally {
      await gw.cleanup();
    }
  });

  it('refuses connections beyond the cap and from addresses not allowed', async () => {
    const gw = await startTestGateway({ CTGATE_MLLP_MAX_CONNECTIONS: '2' });
    const walled = await startTestGateway({ CTGATE_MLLP_ALLOW_IPS: '10.0.0.0/8' });
    try {
      const a = await MllpClient.connect(gw.mllp.port);
      const b = await MllpClient.connect(gw.mllp.port);
      await new Promise((r) => setTimeout(r, 50));
      const c = await MllpClient.connect(gw.mllp.port);
      assert.equal(await c.waitClose(2000), true, 'third connection closed');
      a.send(orm({ controlId: 'CAP-1' }));
      assert.equal(ackField(await a.nextAck(), 'MSA', 1), 'AA');
      a.close();
      b.close();
      const d = await MllpClient.connect(walled.mllp.port);
      d.send(orm({ controlId: 'WALL-1' }));
      assert.equal(await d.waitClose(2000), true, 'loopback is not in 10.0.0.0/8');
    } finally {
      await gw.cleanup();
      await walled.cleanup();
    }
  });
});
