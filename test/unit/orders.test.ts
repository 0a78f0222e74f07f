import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseMessage } from '../../src/hl7/message.js';
import { decodeMessageBytes } from '../../src/hl7/text.js';
import { evaluateMessage } from '../../src/orders/evaluate.js';
import { decideChestCt, extractOrders, hl7DateTimeToIso } from '../../src/orders/extract.js';
import { loadMappings, MappingsError, parseMappings } from '../../src/orders/mappings.js';
import { orm } from '../helpers/hl7.js';

const mappings = loadMappings('mappings/orders.yaml');
const fixture = readFileSync('fixtures/hl7/orm-chest-ct.hl7');

const evalOrm = (o: Parameters<typeof orm>[0]) => evaluateMessage(orm(o), mappings);
const rejectKind = (o: Parameters<typeof orm>[0] | string) => {
  const ev = typeof o === 'string' ? evaluateMessage(o, mappings) : evalOrm(o);
  return ev.kind === 'reject' ? ev.error.kind : 'accepted';
};

describe('order extraction', () => {
  it('reads every field the intake needs from an ORM^O01', () => {
    const [o] = extractOrders(parseMessage(decodeMessageBytes(fixture)), mappings);
    assert.ok(o);
    assert.deepEqual(o.sender, { application: 'EPIC', facility: 'GENHOSP' });
    assert.equal(o.orderControl, 'NW');
    assert.equal(o.placerOrderNumber, 'PLC1001');
    assert.equal(o.fillerOrderNumber, 'FIL2001');
    assert.equal(o.accessionNumber, 'ACC3001');
    assert.deepEqual([o.procedure.code, o.procedure.system], ['71250', 'C4']);
    assert.equal(o.priority, 'stat');
    assert.equal(o.orderDateTime, '2026-11-27T10:14:00');
    assert.deepEqual(o.patient.identifiers, [{ value: 'MRN12345', authority: 'GENHOSP', type: 'MR' }]);
    assert.equal(o.patient.birthDate, '1980-01-02');
    assert.equal(o.patient.sex, 'female');
    assert.equal(o.orderingProvider?.family, 'ORDERING');
  });

  it('handles a BOM and LF or CRLF line ends the same as CR', () => {
    const text = fixture.toString('utf8');
    for (const variant of [`\uFEFF${text}`, text.replace(/\r?\n|\r/g, '\r\n'), text.replace(/\r?\n|\r/g, '\r')]) {
      const ev = evaluateMessage(decodeMessageBytes(Buffer.from(variant, 'utf8')), mappings);
      assert.equal(ev.kind, 'orders');
    }
  });

  it('reads OMI^O23 with IPC accession and study UID', () => {
    const msg = orm({ controlId: 'OMI1', type: 'OMI^O23^OMI_O23', accession: '', extraSegments: ['IPC|IPCACC9|RP1|1.2.840.113619.2.55.3.1|SPS1|CT'] });
    const ev = evaluateMessage(msg, mappings);
    assert.equal(ev.kind, 'orders');
    if (ev.kind !== 'orders') return;
    assert.equal(ev.orders[0]?.order.accessionNumber, 'IPCACC9');
    assert.equal(ev.orders[0]?.order.studyInstanceUid, '1.2.840.113619.2.55.3.1');
  });

  it('reads every order group of a message', () => {
    const msg = `${orm({ controlId: 'G1', placer: 'A1' })}\rORC|NW|A2^EPIC\rOBR|2|A2^EPIC||24627-2^CT Chest^LN`;
    const ev = evaluateMessage(msg, mappings);
    assert.equal(ev.kind === 'orders' && ev.orders.map((o) => o.order.placerOrderNumber).join(','), 'A1,A2');
  });

  it('converts HL7 date/times without losing precision', () => {
    assert.equal(hl7DateTimeToIso('20261127101459'), '2026-11-27T10:14:59');
    assert.equal(hl7DateTimeToIso('202611271014-0500'), '2026-11-27T10:14:00-05:00');
    assert.equal(hl7DateTimeToIso('19800102'), '1980-01-02');
    assert.equal(hl7DateTimeToIso('20261327'), undefined);
    assert.equal(hl7DateTimeToIso('notadate'), undefined);
  });
});

describe('rejections carry the right HL7 error', () => {
  it('by message type, event, version, processing id and control id', () => {
    assert.equal(rejectKind({ controlId: 'R1', type: 'ORU^R01' }), 'unsupportedMessageType');
    assert.equal(rejectKind({ controlId: 'R2', type: 'ADT^A01' }), 'unsupportedMessageType');
    assert.equal(rejectKind({ controlId: 'R3', type: 'ORM^O02' }), 'unsupportedEventCode');
    assert.equal(rejectKind({ controlId: 'R4', version: '3.0' }), 'unsupportedVersionId');
    assert.equal(rejectKind(orm({ controlId: 'R5' }).replace('|P|2.5.1', '|X|2.5.1')), 'unsupportedProcessingId');
    assert.equal(rejectKind(orm({ controlId: 'R6' }).replace('|R6|', '||')), 'requiredFieldMissing');
    assert.equal(rejectKind('not hl7 at all'), 'segmentSequence');
  });

  it('by missing or invalid order content', () => {
    assert.equal(rejectKind(orm({ controlId: 'R7' }).replace(/\rPID\|[^\r]*/, '')), 'requiredFieldMissing');
    assert.equal(rejectKind(orm({ controlId: 'R8' }).replace(/\rOBR\|[^\r]*/, '')), 'segmentSequence');
    assert.equal(rejectKind({ controlId: 'R9', control: 'ZZ' }), 'tableValueNotFound');
    assert.equal(rejectKind({ controlId: 'R10', placer: '' }), 'requiredFieldMissing');
    assert.equal(rejectKind({ controlId: 'R11', extraSegments: ['ZDS|not.a.uid'] }), 'dataTypeError');
  });

  it('by facilities not allowed', () => {
    const m = parseMappings({ ...mappings.doc, allowedFacilities: ['GENHOSP'] });
    const ev = evaluateMessage(orm({ controlId: 'F1', facility: 'OTHERHOSP' }), m);
    assert.equal(ev.kind, 'reject');
    assert.equal(evaluateMessage(orm({ controlId: 'F2' }), m).kind, 'orders');
  });
});

describe('rejection reasons name places, never message text', () => {
  // A stray CR splitting PID-5 turns the rest of the name into a "segment"; the reason must not quote it.
  const strayCr = orm({ controlId: 'CR-1' }).replace('TEST^PATIENT', 'TEST^PAT\rIENTNAME');
  const cases: [string, string, string][] = [
    ['stray CR in PID-5', strayCr, 'IENTNAME'],
    ['stray CR before a name component', orm({ controlId: 'CR-2' }).replace('TEST^PATIENT', 'TEST^\rPATIENT'), 'PATIENT'],
    ['message type', orm({ controlId: 'Q1', type: 'ZQX^R01' }), 'ZQX'],
    ['trigger event', orm({ controlId: 'Q2', type: 'ORM^Z77' }), 'Z77'],
    ['version', orm({ controlId: 'Q3', version: '9.XY' }), '9.XY'],
    ['processing id', orm({ controlId: 'Q4' }).replace('|P|2.5.1', '|Q|2.5.1'), '"Q"'],
    ['order control', orm({ controlId: 'Q5', control: 'QQ' }), 'QQ'],
  ];
  for (const [what, text, value] of cases) {
    it(`${what}: not quoted by default, quoted with quoteValues`, () => {
      const plain = evaluateMessage(text, mappings);
      assert.equal(plain.kind, 'reject');
      assert.ok(!plain.error.reason.includes(value), `reason "${plain.error.reason}" quotes ${value}`);
      const quoted = evaluateMessage(text, mappings, { quoteValues: true });
      assert.equal(quoted.kind, 'reject');
      assert.ok(quoted.error.reason.includes(value.replaceAll('"', '')), `reason "${quoted.error.reason}" quotes ${value} when asked`);
    });
  }

  it('a stray CR names the segment and field it cut', () => {
    const ev = evaluateMessage(strayCr, mappings);
    assert.equal(ev.kind, 'reject');
    assert.equal(ev.error.kind, 'segmentSequence');
    assert.match(ev.error.reason, /^segment 3 has no valid segment id; a CR inside PID-5 would do this$/);
    assert.deepEqual([ev.error.segment, ev.error.field], ['PID', 5]);
  });

  it('the sending facility is not quoted by default', () => {
    const m = parseMappings({ ...mappings.doc, allowedFacilities: ['GENHOSP'] });
    const ev = evaluateMessage(orm({ controlId: 'F3', facility: 'OTHERHOSP' }), m);
    assert.equal(ev.kind, 'reject');
    assert.match(ev.error.reason, /^MSH-4 sending facility is not in allowedFacilities$/);
  });
});

describe('ORM^O01 order details other than OBR (RXO, ODS, ODT, RQD, RQ1)', () => {
  // The ORDER_DETAIL choice of ORM^O01: valid HL7, not imaging orders.
  const details: Record<string, string> = {
    RXO: 'RXO|00904-2121^ACETAMINOPHEN 325MG TAB^NDC|325||MG',
    ODS: 'ODS|D||1023^REGULAR DIET^L',
    ODT: 'ODT|EARLY^EARLY TRAY^L',
    RQD: 'RQD|1|ITEM-77^GAUZE PADS^L|||4|BX',
    RQ1: 'RQ1|12.50|ACME^ACME MEDICAL^L|CAT-9',
  };
  const withDetail = (controlId: string, detail: string, type = 'ORM^O01^ORM_O01') => orm({ controlId, type }).replace(/\rOBR\|[^\r]*/, `\r${detail}`);
  for (const [seg, line] of Object.entries(details)) {
    it(`${seg}: accepted, not a chest CT, with a reason that names ${seg}`, () => {
      const ev = evaluateMessage(withDetail(`D-${seg}`, line), mappings);
      assert.equal(ev.kind, 'orders', ev.kind === 'reject' ? ev.error.reason : '');
      assert.equal(ev.orders.length, 1);
      const [o] = ev.orders;
      assert.equal(o?.order.orderDetail, seg);
      assert.equal(o?.chestCt.chestCt, false);
      assert.match(o?.chestCt.because ?? '', new RegExp(`order detail is ${seg} .*not an imaging order`));
      assert.equal(o?.order.accessionNumber, undefined);
    });
  }

  it("reads no other group's OBR and keeps an imaging group beside it", () => {
    const text = orm({ controlId: 'D-MIX' }).replace(/\rORC\|/, `\rORC|NW|RX-1^EPIC||||||||||77^ORDERING^OLIVIA\r${details.RXO}\rORC|`);
    const ev = evaluateMessage(text, mappings);
    assert.equal(ev.kind, 'orders', ev.kind === 'reject' ? ev.error.reason : '');
    assert.deepEqual(
      ev.orders.map((o) => [o.order.placerOrderNumber, o.order.orderDetail, o.chestCt.chestCt, o.order.accessionNumber]),
      [
        ['RX-1', 'RXO', false, undefined],
        ['P-D-MIX', undefined, true, 'A-P-D-MIX'],
      ],
    );
  });

  it('still rejects an ORC with no order detail, and OMI^O23 without an OBR', () => {
    assert.equal(rejectKind(orm({ controlId: 'D-NONE' }).replace(/\rOBR\|[^\r]*/, '')), 'segmentSequence');
    assert.equal(rejectKind(withDetail('D-OMI', details.RXO as string, 'OMI^O23^OMI_O23')), 'segmentSequence');
  });
});

describe('chest CT decision', () => {
  const decide = (o: Parameters<typeof orm>[0]) => {
    const ev = evalOrm(o);
    assert.equal(ev.kind, 'orders');
    return ev.kind === 'orders' ? ev.orders[0]?.chestCt : undefined;
  };
  it('matches shipped codes under each system alias', () => {
    assert.equal(decide({ controlId: 'C1', code: '24627-2', codeSystem: 'LN', codeText: 'x' })?.chestCt, true);
    assert.equal(decide({ controlId: 'C2', code: '71260', codeSystem: 'CPT4', codeText: 'x' })?.chestCt, true);
    assert.equal(decide({ controlId: 'C3', code: '71260', codeSystem: 'LN', codeText: 'x' })?.chestCt, false);
  });
  it('matches text patterns but not excluded procedures', () => {
    assert.equal(decide({ controlId: 'T1', code: 'X1', codeSystem: 'L', codeText: 'CT CHEST WITHOUT CONTRAST' })?.chestCt, true);
    assert.equal(decide({ controlId: 'T2', code: 'X2', codeSystem: 'L', codeText: 'CTA CHEST PE PROTOCOL' })?.chestCt, false);
    assert.equal(decide({ controlId: 'T3', code: 'X3', codeSystem: 'L', codeText: 'MRI BRAIN' })?.chestCt, false);
  });
  it('uses per-facility local codes', () => {
    assert.equal(decide({ controlId: 'L1', code: 'CTCHEST', codeSystem: '', codeText: '', facility: 'EXAMPLE_RIS_HOSPITAL' })?.chestCt, true);
    assert.equal(decide({ controlId: 'L2', code: 'CTCHEST', codeSystem: '', codeText: '', facility: 'GENHOSP' })?.chestCt, false);
  });
  it('reads the alternate identifier OBR-4.4', () => {
    const ev = evaluateMessage(
      orm({ controlId: 'ALT', code: 'LOCAL9', codeText: 'X', codeSystem: 'L' }).replace('LOCAL9^X^L', 'LOCAL9^X^L^24627-2^CT Chest^LN'),
      mappings,
    );
    const order = ev.kind === 'orders' ? ev.orders[0]?.order : undefined;
    assert.ok(order);
    assert.equal(decideChestCt(order, mappings).chestCt, true);
  });
});

describe('mappings validation', () => {
  it('names the bad entry', () => {
    assert.throws(
      () => parseMappings({ ...mappings.doc, fields: { ...mappings.doc.fields, accessionNumber: ['OBR18'] } }),
      (e: unknown) => e instanceof MappingsError && /fields\.accessionNumber\.0: a field path/.test(e.message),
    );
    assert.throws(
      () => parseMappings({ ...mappings.doc, chestCt: { ...mappings.doc.chestCt, textPatterns: ['(unclosed'] } }),
      (e: unknown) => e instanceof MappingsError && /chestCt\.textPatterns\.0/.test(e.message),
    );
    assert.throws(() => loadMappings('/nonexistent.yaml'), /cannot read/);
  });
});
