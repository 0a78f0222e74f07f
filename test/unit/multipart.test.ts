import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseContentType, readMultipart } from '../../src/dicomweb/multipart.js';

// Orthanc's style: a 70-character unquoted boundary, and a type parameter with a quoted transfer syntax.
const boundary = '37b0269a-92eb-49ae-a4b5-f70e6f85f3d9-5a09a640-bfa7-4864-bfe8-ce3983a71';

function body(parts: Buffer[]): Buffer {
  const out: Buffer[] = [];
  parts.forEach((p, i) => {
    out.push(
      Buffer.from(`--${boundary}\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\nContent-Location: /frames/${i + 1}\r\n\r\n`),
      p,
      Buffer.from('\r\n'),
    );
  });
  out.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(out);
}

async function* chunks(buf: Buffer, size: number) {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function collect(buf: Buffer, size: number) {
  const out = [];
  for await (const p of readMultipart(chunks(buf, size), boundary)) out.push(p);
  return out;
}

describe('multipart/related', () => {
  it('parses a DICOMweb Content-Type with a quoted type containing ";"', () => {
    const ct = parseContentType(`multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"; boundary=${boundary}`);
    assert.equal(ct.mediaType, 'multipart/related');
    assert.equal(ct.params.boundary, boundary);
    assert.equal(parseContentType(ct.params.type ?? '').params['transfer-syntax'], '1.2.840.10008.1.2.1');
  });

  it('yields each part intact whatever the chunking, including bodies that contain CRLF and dashes', async () => {
    const parts = [Buffer.from('\r\n--not-the-boundary\r\n'), Buffer.alloc(5000, 7), Buffer.from([13, 10, 45, 45])];
    const whole = body(parts);
    for (const size of [1, 2, 3, 7, 64, 1000, whole.length]) {
      const got = await collect(whole, size);
      assert.equal(got.length, 3, `chunk size ${size}`);
      for (const [i, p] of got.entries()) assert.ok(p.body.equals(parts[i] as Buffer), `part ${i} at chunk size ${size}`);
      assert.equal(got[1]?.headers['content-location'], '/frames/2');
    }
  });

  it('fails on a response cut before its closing boundary', async () => {
    const whole = body([Buffer.alloc(100, 1)]);
    await assert.rejects(collect(whole.subarray(0, 150), 16), /ended before its closing boundary/);
  });
});
