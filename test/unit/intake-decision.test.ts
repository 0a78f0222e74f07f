import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jobIdFor } from '../../src/domain/job.js';
import type { OrderStatus } from '../../src/domain/order.js';
import { decideIntake, type IntakeDecision, ledgerQueryFor } from '../../src/orders/decision.js';
import { evaluateMessage } from '../../src/orders/evaluate.js';
import { type LedgerEntry, type LedgerFacts, messageKeyFor, NO_FACTS, type QueueState, type ResendMarker } from '../../src/orders/ledger.js';
import { loadMappings } from '../../src/orders/mappings.js';
import type { OrderRecord } from '../../src/orders/store.js';
import { orm } from '../helpers/hl7.js';

const mappings = loadMappings('mappings/orders.yaml');
const NOW = new Date('2026-12-01T10:00:00.000Z');
const sender = { application: 'EPIC', facility: 'GENHOSP' };
const idOf = (placer: string) => jobIdFor(sender, placer);

interface Options {
  facts?: LedgerFacts;
  notDurable?: string;
  replay?: boolean;
}

/** Decides `msg` as the intake does: the ledger is asked what ledgerQueryFor says, and answers `facts`. */
function decide(msg: string, o: Options = {}): IntakeDecision {
  const evaluation = evaluateMessage(msg, mappings);
  const notDurable = o.notDurable ?? null;
  const query = ledgerQueryFor(evaluation, notDurable);
  return decideIntake({
    evaluation,
    text: msg,
    remoteAddress: '10.0.0.9',
    replay: o.replay ?? false,
    notDurable,
    known: query ? { query, facts: o.facts ?? NO_FACTS } : null,
    now: NOW,
  });
}

/** The record a new order for `placer` gets, with `status`. */
function existing(placer: string, status: OrderStatus = 'queued'): OrderRecord {
  const d = decide(orm({ controlId: `NW-${placer}`, placer }));
  assert.ok(d.kind === 'accept' && d.write.kind === 'orders');
  const r = d.write.records[0];
  assert.ok(r);
  return { ...r, status };
}

function knowing(record: OrderRecord, state?: QueueState, seen: ResendMarker | null = null): LedgerFacts {
  return { seen, records: new Map([[record.jobId, record]]), queueStates: new Map(state ? [[record.jobId, state]] : []) };
}

function accepted(d: IntakeDecision) {
  assert.equal(d.kind, 'accept', JSON.stringify(d).slice(0, 300));
  assert.ok(d.kind === 'accept' && d.write.kind === 'orders');
  return { ...d, write: d.write as Extract<LedgerEntry, { kind: 'orders' }> };
}

function rejected(d: IntakeDecision) {
  assert.equal(d.kind, 'reject', JSON.stringify(d).slice(0, 300));
  assert.ok(d.kind === 'reject');
  return d;
}

describe('intake decision: what the ledger is asked', () => {
  it('asks for the resend marker and every order, and job states only for chest-CT cancels and updates', () => {
    const msg = `${orm({ controlId: 'Q-1', placer: 'A1', control: 'CA' })}\rORC|NW|A2^EPIC\rOBR|2|A2^EPIC||24627-2^CT Chest^LN\rORC|XO|A3^EPIC\rOBR|3|A3^EPIC||70450^CT HEAD^C4`;
    const query = ledgerQueryFor(evaluateMessage(msg, mappings), null);
    assert.deepEqual(query, {
      messageKey: messageKeyFor('EPIC', 'GENHOSP', 'Q-1'),
      orders: [
        { jobId: idOf('A1'), jobState: true },
        { jobId: idOf('A2'), jobState: false },
        { jobId: idOf('A3'), jobState: false },
      ],
    });
  });

  it('asks nothing for a rejected message or while the store is not durable', () => {
    assert.equal(ledgerQueryFor(evaluateMessage(orm({ controlId: 'Q-2', type: 'ORU^R01' }), mappings), null), null);
    assert.equal(ledgerQueryFor(evaluateMessage(orm({ controlId: 'Q-3' }), mappings), 'no AOF'), null);
  });
});

describe('intake decision: rejections', () => {
  it('rejects an unparsable or unsupported message with its HL7 error and dead-letters it', () => {
    const d = rejected(decide(orm({ controlId: 'R-ORU', type: 'ORU^R01^ORU_R01' })));
    assert.equal(d.error.kind, 'unsupportedMessageType');
    assert.ok(d.write?.kind === 'dead-letter');
    const { message } = d.write;
    assert.equal(message.kind, 'dead-letter');
    assert.equal(message.errorCode, 200);
    assert.equal(message.ackCode, 'AR');
    assert.equal(message.controlId, 'R-ORU');
    assert.equal(message.receivedAt, NOW.toISOString());
    assert.equal(message.remoteAddress, '10.0.0.9');
    assert.match(message.raw, /^MSH\|/);
  });

  it('gives the dead letter the enhanced-mode code when MSH-15 is valued', () => {
    const d = rejected(decide(orm({ controlId: 'R-ENH', type: 'ORU^R01', acceptAck: 'AL', appAck: 'NE' })));
    assert.ok(d.write?.kind === 'dead-letter');
    assert.equal(d.write.message.ackCode, 'CR');
  });

  it('writes nothing for an operator replay', () => {
    assert.equal(rejected(decide(orm({ controlId: 'R-REPLAY', type: 'ORU^R01' }), { replay: true })).write, null);
  });

  it('rejects a cancel or update of an unknown order with 204 (ORC-2)', () => {
    for (const control of ['CA', 'DC', 'OC', 'XO']) {
      const d = rejected(decide(orm({ controlId: `R-UNK-${control}`, placer: 'NEVER', control })));
      assert.deepEqual([d.error.kind, d.error.segment, d.error.field], ['unknownKey', 'ORC', 2]);
      assert.ok(d.write?.kind === 'dead-letter' && d.write.message.errorCode === 204);
    }
  });

  it('rejects an update of an order that is no longer queued (ORC-1)', () => {
    for (const status of ['cancelled', 'cancel-requested'] as const) {
      const record = existing('XO-DONE', status);
      const d = rejected(decide(orm({ controlId: `R-XO-${status}`, placer: 'XO-DONE', control: 'XO' }), { facts: knowing(record, 'waiting') }));
      assert.equal(d.error.kind, 'internalError');
      assert.equal(d.error.reason, `the order is ${status}; it cannot be changed`);
      assert.deepEqual([d.error.segment, d.error.field], ['ORC', 1]);
    }
  });

  it('rejects the whole message when one of its orders is rejected', () => {
    const msg = `${orm({ controlId: 'R-MIX', placer: 'NEW-1' })}\rORC|CA|NOPE^EPIC\rOBR|2|NOPE^EPIC||71250^CT THORAX^C4`;
    assert.equal(rejected(decide(msg)).error.kind, 'unknownKey');
  });
});

describe('intake decision: store not durable, resends', () => {
  it('answers AE without writing while orders cannot be stored durably', () => {
    const d = decide(orm({ controlId: 'U-1' }), { notDurable: 'Redis does not persist' });
    assert.deepEqual(d, {
      kind: 'unavailable',
      header: d.header,
      error: { kind: 'internalError', reason: 'Redis does not persist' },
      write: null,
    });
  });

  it('still rejects (and dead-letters) a bad message while not durable', () => {
    assert.ok(rejected(decide(orm({ controlId: 'U-2', type: 'ORU^R01' }), { notDurable: 'x' })).write);
  });

  it('answers a resend as the original was answered, writing nothing', () => {
    const facts = (seen: ResendMarker): LedgerFacts => ({ ...NO_FACTS, seen });
    const ok = decide(orm({ controlId: 'S-1' }), { facts: facts({ code: 'AA', text: 'order queued' }) });
    assert.deepEqual(ok, {
      kind: 'resend',
      header: ok.header,
      answer: 'accept',
      reason: 'resend of an already processed message: order queued',
      write: null,
    });
    const enhanced = decide(orm({ controlId: 'S-2' }), { facts: facts({ code: 'CA', text: 'order queued' }) });
    assert.equal(enhanced.kind === 'resend' && enhanced.answer, 'accept');
    const failed = decide(orm({ controlId: 'S-3' }), { facts: facts({ code: 'AE', text: 'x' }) });
    assert.equal(failed.kind === 'resend' && failed.answer, 'error');
  });
});

describe('intake decision: new orders', () => {
  it('queues a new chest-CT order: its job, its record and the resend marker in one entry', () => {
    const d = accepted(decide(orm({ controlId: 'N-1', placer: 'PL-N1' })));
    const jobId = idOf('PL-N1');
    assert.equal(d.outcome, 'queued');
    assert.equal(d.reason, 'order queued');
    assert.deepEqual(d.jobIds, [jobId]);
    assert.equal(d.write.messageKey, messageKeyFor('EPIC', 'GENHOSP', 'N-1'));
    assert.deepEqual(d.write.marker, { code: 'AA', text: 'order queued' });
    assert.deepEqual(d.write.jobChanges, []);
    assert.equal(d.write.ignored, undefined);
    const [job] = d.write.newJobs;
    assert.equal(job?.jobId, jobId);
    assert.equal(job?.data.receivedAt, NOW.toISOString());
    assert.equal(job?.data.messageControlId, 'N-1');
    assert.equal(job?.data.order.placerOrderNumber, 'PL-N1');
    const [record] = d.write.records;
    assert.deepEqual(
      { ...record, order: undefined },
      {
        jobId,
        status: 'queued',
        order: undefined,
        createdAt: NOW.toISOString(),
        updatedAt: NOW.toISOString(),
        history: [{ at: NOW.toISOString(), control: 'NW', controlId: 'N-1', note: 'created' }],
      },
    );
  });

  it('marks the answer CA in enhanced mode', () => {
    assert.equal(accepted(decide(orm({ controlId: 'N-2', acceptAck: 'AL', appAck: 'NE' }))).write.marker.code, 'CA');
  });

  it('finds an order it already has (a new message for the same placer number) without a new job', () => {
    const record = existing('PL-DUP');
    const d = accepted(decide(orm({ controlId: 'N-DUP-2', placer: 'PL-DUP' }), { facts: knowing(record) }));
    assert.equal(d.outcome, 'duplicate');
    assert.equal(d.reason, 'order already received');
    assert.deepEqual(d.jobIds, [record.jobId]);
    assert.deepEqual([d.write.newJobs, d.write.records, d.write.jobChanges], [[], [], []]);
    assert.deepEqual(d.write.marker, { code: 'AA', text: 'order already received' });
  });
});

describe('intake decision: orders recorded, not acted on', () => {
  it('acknowledges an order that is not a chest CT and keeps the message as ignored', () => {
    const msg = orm({ controlId: 'I-1', placer: 'PL-HEAD', code: '70450', codeText: 'CT HEAD WO CONTRAST' });
    const d = accepted(decide(msg));
    assert.equal(d.outcome, 'ignored');
    assert.match(d.reason, /^not a chest CT \(/);
    assert.deepEqual([d.jobIds, d.write.newJobs, d.write.records], [[], [], []]);
    assert.deepEqual(d.write.ignored, {
      kind: 'ignored',
      receivedAt: NOW.toISOString(),
      reason: d.reason,
      ackCode: 'AA',
      sendingApplication: 'EPIC',
      sendingFacility: 'GENHOSP',
      messageType: 'ORM^O01',
      controlId: 'I-1',
      remoteAddress: '10.0.0.9',
      raw: msg,
    });
  });

  it('records an order control it does not act on', () => {
    const d = accepted(decide(orm({ controlId: 'I-2', control: 'SC' })));
    assert.equal(d.outcome, 'ignored');
    assert.equal(d.reason, 'order control SC is recorded, not acted on');
  });

  it('keeps no ignored message for a replay', () => {
    assert.equal(accepted(decide(orm({ controlId: 'I-3', code: '70450', codeText: 'CT HEAD' }), { replay: true })).write.ignored, undefined);
  });

  it('ignores a non-chest-CT cancel of an unknown order instead of rejecting it', () => {
    assert.equal(accepted(decide(orm({ controlId: 'I-4', placer: 'NEVER', control: 'CA', code: '70450', codeText: 'CT HEAD' }))).outcome, 'ignored');
  });
});

describe('intake decision: cancels', () => {
  const cancel = (placer: string, state: QueueState | undefined, status: OrderStatus = 'queued', control = 'CA') => {
    const record = existing(placer, status);
    return { record, d: accepted(decide(orm({ controlId: `C-${placer}`, placer, control }), { facts: knowing(record, state) })) };
  };

  it('cancels a job that has not started and withdraws it from the queue', () => {
    for (const state of ['waiting', 'delayed', 'prioritized', 'waiting-children']) {
      const { record, d } = cancel(`PL-${state}`, state);
      assert.equal(d.outcome, 'cancelled');
      assert.equal(d.reason, 'cancelled');
      assert.deepEqual(d.write.jobChanges, [{ kind: 'remove', jobId: record.jobId }]);
      assert.equal(d.write.records[0]?.status, 'cancelled');
      assert.deepEqual(d.write.records[0]?.history.at(-1), {
        at: NOW.toISOString(),
        control: 'CA',
        controlId: `C-PL-${state}`,
        note: 'cancelled before start',
      });
    }
  });

  it('cancels an order whose job is gone without touching the queue', () => {
    const { d } = cancel('PL-GONE', undefined, 'queued', 'DC');
    assert.equal(d.outcome, 'cancelled');
    assert.deepEqual(d.write.jobChanges, []);
    assert.equal(d.write.records[0]?.history.at(-1)?.control, 'DC');
  });

  it('records a cancel request for a running job', () => {
    const { d } = cancel('PL-ACTIVE', 'active');
    assert.equal(d.outcome, 'cancel-requested');
    assert.equal(d.reason, 'job is running; cancel requested');
    assert.equal(d.write.records[0]?.status, 'cancel-requested');
    assert.deepEqual(d.write.jobChanges, []);
  });

  it('lets a finished job stand, noting the cancel', () => {
    const { d } = cancel('PL-DONE', 'completed');
    assert.equal(d.outcome, 'duplicate');
    assert.equal(d.reason, 'job already completed');
    assert.equal(d.write.records[0]?.status, 'queued');
    assert.equal(d.write.records[0]?.history.at(-1)?.note, 'cancel after job completed; result stands');
  });

  it('answers a second cancel as already cancelled, the record unchanged', () => {
    const { record, d } = cancel('PL-TWICE', 'missing', 'cancelled', 'OC');
    assert.equal(d.outcome, 'duplicate');
    assert.equal(d.reason, 'already cancelled');
    assert.deepEqual(d.write.records, [record]);
  });
});

describe('intake decision: updates', () => {
  it('applies an XO to a job that has not started', () => {
    const record = existing('PL-XO');
    const msg = orm({ controlId: 'X-1', placer: 'PL-XO', control: 'XO', accession: 'ACC-NEW' });
    const d = accepted(decide(msg, { facts: knowing(record, 'waiting') }));
    assert.equal(d.outcome, 'updated');
    assert.equal(d.reason, 'order updated');
    const [r] = d.write.records;
    assert.equal(r?.order.accessionNumber, 'ACC-NEW');
    assert.deepEqual(
      r?.history.map((h) => h.control),
      ['NW', 'XO'],
    );
    assert.deepEqual(d.write.jobChanges, [
      { kind: 'update-data', jobId: record.jobId, data: { order: r?.order, receivedAt: NOW.toISOString(), messageControlId: 'X-1' } },
    ]);
  });

  it('records an XO for a job already running without changing the order', () => {
    const record = existing('PL-XO-RUN');
    const d = accepted(decide(orm({ controlId: 'X-2', placer: 'PL-XO-RUN', control: 'XO', accession: 'ACC-NEW' }), { facts: knowing(record, 'active') }));
    assert.equal(d.reason, 'update recorded; job already active');
    assert.equal(d.write.records[0]?.order.accessionNumber, record.order.accessionNumber);
    assert.deepEqual(d.write.jobChanges, []);
  });
});

describe('intake decision: messages with several orders, purity', () => {
  it('reports every order, the first outcome naming the message', () => {
    const record = existing('M-OLD');
    const msg = `${orm({ controlId: 'M-1', placer: 'M-OLD' })}\rORC|NW|M-NEW^EPIC\rOBR|2|M-NEW^EPIC||24627-2^CT Chest^LN\rORC|NW|M-HEAD^EPIC\rOBR|3|M-HEAD^EPIC||70450^CT HEAD^C4`;
    const d = accepted(decide(msg, { facts: knowing(record) }));
    assert.equal(d.outcome, 'duplicate');
    assert.deepEqual(d.jobIds, [idOf('M-OLD'), idOf('M-NEW')]);
    assert.match(d.reason, /^order already received; order queued; not a chest CT/);
    assert.deepEqual(
      d.write.newJobs.map((j) => j.jobId),
      [idOf('M-NEW')],
    );
    assert.equal(d.write.ignored, undefined, 'a message that acted on an order is not kept as ignored');
  });

  it('decides the same from the same input and leaves the facts as they were', () => {
    const record = existing('P-1');
    const facts = knowing(record, 'waiting');
    const before = JSON.stringify([...facts.records]);
    const msg = orm({ controlId: 'P-CA', placer: 'P-1', control: 'CA' });
    assert.deepEqual(decide(msg, { facts }), decide(msg, { facts }));
    assert.equal(JSON.stringify([...facts.records]), before);
  });
});
