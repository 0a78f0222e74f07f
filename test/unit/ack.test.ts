import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ackCodeFor, ackPlan, buildAck, escapeHl7 } from '../../src/hl7/ack.js';
import { readHeader } from '../../src/hl7/header.js';

const msg = (v = '2.5.1', ack = '') =>
  `MSH|^~\\&|EPIC^1.2.3^ISO|GENHOSP|CTGATE|RAD|20261127101500||ORM^O01^ORM_O01|MSG-42|P|${v}${ack ? `|||${ack}` : ''}\rPID|1`;
const now = new Date('2026-11-27T10:00:00Z');
const base = { appName: 'CTGATE', facilityName: 'CTGATE', controlId: 'ACK1', now };
const seg = (ack: string, id: string) =>
  ack
    .split('\r')
    .find((l) => l.startsWith(id))
    ?.split('|') ?? [];

describe('ACK building', () => {
  it('mirrors the sender in MSH and echoes MSH-10 in MSA-2', () => {
    const ack = buildAck({ ...base, header: readHeader(msg()), code: 'AA' });
    const msh = seg(ack, 'MSH');
    assert.equal(msh[2], 'CTGATE');
    assert.equal(msh[3], 'RAD');
    assert.equal(msh[4], 'EPIC^1.2.3^ISO');
    assert.equal(msh[5], 'GENHOSP');
    assert.equal(msh[6], '20261127100000+0000');
    assert.equal(msh[8], 'ACK^O01^ACK');
    assert.equal(msh[9], 'ACK1');
    assert.equal(msh[10], 'P');
    assert.equal(msh[11], '2.5.1');
    assert.deepEqual(seg(ack, 'MSA').slice(0, 3), ['MSA', 'AA', 'MSG-42']);
  });

  it('writes ERR-3 with a table 0357 code and ERR-8 with the reason in v2.5+', () => {
    const ack = buildAck({
      ...base,
      header: readHeader(msg()),
      code: 'AR',
      error: { kind: 'unsupportedMessageType', reason: 'ORU not taken | here', segment: 'MSH', field: 9 },
    });
    const err = seg(ack, 'ERR');
    assert.equal(err[2], 'MSH^1^9');
    assert.equal(err[3], '200^Unsupported message type^HL70357');
    assert.equal(err[4], 'E');
    assert.equal(err[8], 'ORU not taken \\F\\ here');
  });

  it('uses ERR-1 for versions before 2.5', () => {
    const ack = buildAck({ ...base, header: readHeader(msg('2.3')), code: 'AE', error: { kind: 'internalError', reason: 'store down' } });
    assert.equal(seg(ack, 'MSH')[8], 'ACK^O01');
    assert.equal(seg(ack, 'ERR')[1], '^^^207&Application internal error&HL70357');
    assert.equal(seg(ack, 'MSA')[3], 'store down');
  });

  it('still answers when no MSH was found', () => {
    const ack = buildAck({ ...base, header: null, code: 'AR', error: { kind: 'segmentSequence', reason: 'no MSH' } });
    assert.equal(seg(ack, 'MSA')[1], 'AR');
    assert.equal(seg(ack, 'MSA')[2], '');
  });

  it('escapes delimiters', () => {
    assert.equal(escapeHl7('a|b^c~d\\e&f'), 'a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f');
  });
});

describe('acknowledgment mode', () => {
  it('is original mode without MSH-15/16', () => {
    assert.deepEqual(ackPlan(readHeader(msg()), false), { enhanced: false, send: true });
    assert.equal(ackCodeFor('error', false), 'AE');
  });
  it('follows MSH-15 in enhanced mode', () => {
    const h = (v: string) => readHeader(msg('2.5.1', v));
    assert.deepEqual(ackPlan(h('AL'), true), { enhanced: true, send: true });
    assert.deepEqual(ackPlan(h('NE'), false), { enhanced: true, send: false });
    assert.deepEqual(ackPlan(h('ER'), true), { enhanced: true, send: false });
    assert.deepEqual(ackPlan(h('ER'), false), { enhanced: true, send: true });
    assert.deepEqual(ackPlan(h('SU'), true), { enhanced: true, send: true });
    assert.deepEqual(ackPlan(h('SU'), false), { enhanced: true, send: false });
    assert.equal(ackCodeFor('accept', true), 'CA');
    assert.equal(ackCodeFor('reject', true), 'CR');
  });
  it('treats MSH-16 alone as enhanced mode with accept ACK always', () => {
    const h = readHeader('MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.5||||AL\rPID|1');
    assert.equal(h?.appAckType, 'AL');
    assert.deepEqual(ackPlan(h, true), { enhanced: true, send: true });
  });
});
