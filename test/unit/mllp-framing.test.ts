import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, type FrameEvent, MllpDecoder } from '../../src/hl7/mllp-framing.js';

const messages = (evs: FrameEvent[]) => evs.filter((e) => e.type === 'message').map((e) => (e as { data: Buffer }).data.toString());

describe('MLLP framing', () => {
  it('reassembles a message split into single bytes', () => {
    const d = new MllpDecoder(1024);
    const bytes = encodeFrame('MSH|^~\\&|A\rPID|1');
    const out: FrameEvent[] = [];
    for (const b of bytes) out.push(...d.push(Buffer.from([b])));
    assert.deepEqual(messages(out), ['MSH|^~\\&|A\rPID|1']);
    assert.equal(d.pending, false);
  });

  it('splits several messages arriving in one packet', () => {
    const d = new MllpDecoder(1024);
    const out = d.push(Buffer.concat([encodeFrame('M1'), encodeFrame('M2'), encodeFrame('M3').subarray(0, 3)]));
    assert.deepEqual(messages(out), ['M1', 'M2']);
    assert.equal(d.pending, true);
    assert.deepEqual(messages(d.push(encodeFrame('M3').subarray(3))), ['M3']);
  });

  it('reports bytes outside frames as garbage and keeps going', () => {
    const d = new MllpDecoder(1024);
    const out = d.push(Buffer.concat([Buffer.from('hello'), encodeFrame('M1')]));
    assert.equal(out[0]?.type, 'garbage');
    assert.deepEqual(messages(out), ['M1']);
  });

  it('ignores CR/LF between frames', () => {
    const d = new MllpDecoder(1024);
    const out = d.push(Buffer.concat([encodeFrame('M1'), Buffer.from('\r\n'), encodeFrame('M2')]));
    assert.deepEqual(
      out.map((e) => e.type),
      ['message', 'message'],
    );
  });

  it('skips an oversized frame without buffering it, keeping its head', () => {
    const d = new MllpDecoder(100);
    const big = `MSH|^~\\&|A|B|C|D|||ORM^O01|X1|P|2.5\r${'Z'.repeat(50_000)}`;
    const out = d.push(encodeFrame(big));
    assert.equal(out.length, 1);
    const ev = out[0] as Extract<FrameEvent, { type: 'oversized' }>;
    assert.equal(ev.type, 'oversized');
    assert.equal(ev.size, big.length);
    assert.ok(ev.head.toString().startsWith('MSH|^~\\&|A'));
    assert.ok(ev.head.length <= 8192);
    assert.deepEqual(messages(d.push(encodeFrame('after'))), ['after']);
  });

  it('treats a frame restarted before its end as garbage and reads the new one', () => {
    const d = new MllpDecoder(1024);
    const out = d.push(Buffer.concat([Buffer.from('\x0bpartial'), encodeFrame('M2')]));
    assert.equal(out[0]?.type, 'garbage');
    assert.deepEqual(messages(out), ['M2']);
  });

  it('accepts FS without the trailing CR', () => {
    const d = new MllpDecoder(1024);
    assert.deepEqual(messages(d.push(Buffer.from('\x0bM1\x1c\x0bM2\x1c\r'))), ['M1', 'M2']);
  });
});
