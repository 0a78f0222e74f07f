import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jobIdFor } from '../../src/domain/job.js';
import { silentLogger } from '../../src/observability/log.js';
import { Intake, type IntakeResult } from '../../src/orders/intake.js';
import { loadMappings } from '../../src/orders/mappings.js';
import { ackField, orm } from '../helpers/hl7.js';
import { MemoryLedger } from '../helpers/memory-ledger.js';

const mappings = loadMappings('mappings/orders.yaml');
const sender = { application: 'EPIC', facility: 'GENHOSP' };
const peer = { remoteAddress: '10.0.0.9' };

function intakeOn(ledger: MemoryLedger, notDurable?: () => string | null): Intake {
  return new Intake({ ledger, mappings: () => mappings, log: silentLogger, appName: 'CTGATE', facilityName: 'RAD', notDurable });
}

const send = (intake: Intake, msg: string, meta: { remoteAddress: string; replay?: boolean } = peer) => intake.handle(Buffer.from(msg), meta);
const msa = (r: IntakeResult, n: number) => ackField(r.ack ?? '', 'MSA', n);
const ticks = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('intake on an in-memory ledger', () => {
  it('answers only after the ledger has recorded the order', async () => {
    const ledger = new MemoryLedger();
    const release = ledger.hold();
    let answered: IntakeResult | null = null;
    const pending = send(intakeOn(ledger), orm({ controlId: 'H-1', placer: 'PL-H1' })).then((r) => {
      answered = r;
      return r;
    });
    await ticks(20);
    assert.equal(ledger.attempts.length, 1, 'the entry went to the ledger');
    assert.equal(answered, null, 'no ACK while the record is pending');
    release();
    const r = await pending;
    assert.equal(msa(r, 1), 'AA');
    assert.equal(msa(r, 2), 'H-1');
    assert.deepEqual(r.jobIds, [jobIdFor(sender, 'PL-H1')]);
    assert.ok(ledger.state.jobs.has(jobIdFor(sender, 'PL-H1')));
  });

  it('NAKs AE with ERR 207 when the record fails, leaving nothing written, and accepts the resend once', async () => {
    const ledger = new MemoryLedger();
    const intake = intakeOn(ledger);
    const msg = orm({ controlId: 'F-1', placer: 'PL-F1' });
    ledger.failNext.record = new Error('Stream isn\u2019t writeable');
    const failed = await send(intake, msg);
    assert.equal(failed.ackCode, 'AE');
    assert.equal(failed.outcome, 'error');
    assert.match(ackField(failed.ack ?? '', 'ERR', 3), /^207\^/);
    assert.match(ackField(failed.ack ?? '', 'ERR', 8), /please resend/);
    assert.deepEqual([ledger.state.jobs.size, ledger.state.records.size, ledger.state.seen.size, ledger.state.messages.length], [0, 0, 0, 0]);
    const resent = await send(intake, msg);
    assert.equal(resent.ackCode, 'AA');
    assert.equal(resent.outcome, 'queued');
    const again = await send(intake, msg);
    assert.equal(again.outcome, 'resend');
    assert.equal(ledger.state.jobs.size, 1);
  });

  it('NAKs CE in enhanced mode when the ledger cannot be read', async () => {
    const ledger = new MemoryLedger();
    ledger.failNext.read = new Error('Command timed out');
    const r = await send(intakeOn(ledger), orm({ controlId: 'F-2', acceptAck: 'AL', appAck: 'NE' }));
    assert.equal(r.ackCode, 'CE');
    assert.equal(ledger.attempts.length, 0, 'nothing recorded without the facts');
  });

  it('NAKs AE while the store is not durable, asking and writing nothing', async () => {
    const ledger = new MemoryLedger();
    const r = await send(
      intakeOn(ledger, () => 'Redis does not persist'),
      orm({ controlId: 'ND-1' }),
    );
    assert.equal(r.ackCode, 'AE');
    assert.equal(msa(r, 3), 'Redis does not persist');
    assert.deepEqual([ledger.reads, ledger.attempts.length], [0, 0]);
  });

  it('dead-letters a rejected message before answering AR, but not an operator replay', async () => {
    const ledger = new MemoryLedger();
    const intake = intakeOn(ledger);
    const r = await send(intake, orm({ controlId: 'RJ-1', type: 'ORU^R01^ORU_R01' }));
    assert.equal(r.ackCode, 'AR');
    assert.match(ackField(r.ack ?? '', 'ERR', 3), /^200\^/);
    assert.deepEqual(
      ledger.state.messages.map((m) => [m.kind, m.controlId, m.ackCode]),
      [['dead-letter', 'RJ-1', 'AR']],
    );
    const replay = await send(intake, orm({ controlId: 'RJ-1', type: 'ORU^R01^ORU_R01' }), { remoteAddress: 'replay:x', replay: true });
    assert.equal(replay.ackCode, 'AR');
    assert.equal(ledger.state.messages.length, 1);
  });

  it('answers AE instead of AR when the dead letter cannot be stored', async () => {
    const ledger = new MemoryLedger();
    ledger.failNext.record = new Error('Connection is closed');
    assert.equal((await send(intakeOn(ledger), orm({ controlId: 'RJ-2', type: 'ORU^R01' }))).ackCode, 'AE');
  });

  it('dead-letters an oversized frame with AR', async () => {
    const ledger = new MemoryLedger();
    const r = await intakeOn(ledger).handleOversized(Buffer.from(orm({ controlId: 'BIG-1' })), 9000, 4096, peer);
    assert.equal(r.ackCode, 'AR');
    assert.equal(msa(r, 2), 'BIG-1');
    assert.match(ackField(r.ack ?? '', 'ERR', 8), /exceeds the 4096-byte limit/);
    assert.deepEqual(
      ledger.state.messages.map((m) => [m.kind, m.ackCode, m.reason]),
      [['dead-letter', 'AR', 'message of 9000 bytes exceeds the 4096-byte limit']],
    );
  });

  it('creates, finds again, updates and cancels an order through the ledger', async () => {
    const ledger = new MemoryLedger();
    const intake = intakeOn(ledger);
    const jobId = jobIdFor(sender, 'PL-LIFE');
    assert.equal((await send(intake, orm({ controlId: 'L-1', placer: 'PL-LIFE', accession: 'ACC-1' }))).outcome, 'queued');
    const dup = await send(intake, orm({ controlId: 'L-2', placer: 'PL-LIFE' }));
    assert.deepEqual([dup.outcome, msa(dup, 3)], ['duplicate', 'order already received']);
    assert.equal((await send(intake, orm({ controlId: 'L-3', placer: 'PL-LIFE', control: 'XO', accession: 'ACC-2' }))).outcome, 'updated');
    assert.equal(ledger.state.jobs.get(jobId)?.data.order.accessionNumber, 'ACC-2');
    const cancelled = await send(intake, orm({ controlId: 'L-4', placer: 'PL-LIFE', control: 'CA' }));
    assert.equal(cancelled.outcome, 'cancelled');
    assert.equal(ledger.state.jobs.has(jobId), false, 'job withdrawn');
    assert.equal(ledger.state.records.get(jobId)?.status, 'cancelled');
    assert.deepEqual(
      ledger.state.records.get(jobId)?.history.map((h) => h.control),
      ['NW', 'XO', 'CA'],
    );
    assert.equal((await send(intake, orm({ controlId: 'L-5', placer: 'PL-LIFE' }))).outcome, 'duplicate', 'a late NW does not bring it back');
    assert.equal(ledger.state.jobs.has(jobId), false);
  });

  it('sends no ACK when MSH-15 says NE, after recording all the same', async () => {
    const ledger = new MemoryLedger();
    const r = await send(intakeOn(ledger), orm({ controlId: 'NE-1', acceptAck: 'NE', appAck: 'NE' }));
    assert.deepEqual([r.ack, r.ackCode, r.outcome], [null, 'CA', 'queued']);
    assert.equal(ledger.state.jobs.size, 1);
  });
});
