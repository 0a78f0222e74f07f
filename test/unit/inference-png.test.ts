import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { inflateSync } from 'node:zlib';
import type { HuVolume } from '../../src/imaging/volume.js';
import { crc32, encodePng, keyImagePng, PNG_SIGNATURE, renderSlice } from '../../src/inference/key-images.js';

interface Chunk {
  type: string;
  data: Buffer;
  crcOk: boolean;
}

function chunks(png: Uint8Array): Chunk[] {
  const b = Buffer.from(png);
  const out: Chunk[] = [];
  let o = 8;
  while (o < b.length) {
    const len = b.readUInt32BE(o);
    const type = b.toString('latin1', o + 4, o + 8);
    const data = b.subarray(o + 8, o + 8 + len);
    const crc = b.readUInt32BE(o + 8 + len);
    out.push({ type, data, crcOk: crc === crc32(b.subarray(o + 4, o + 8 + len)) });
    o += 12 + len;
  }
  return out;
}

describe('PNG key images', () => {
  it('computes the standard CRC-32', () => {
    assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
    assert.equal(crc32(new Uint8Array(0)), 0);
  });

  it('writes a valid RGB PNG: signature, IHDR, IDAT that inflates to the filtered rows, IEND, good CRCs', () => {
    const w = 5;
    const h = 3;
    const rgb = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 7) % 256);
    const png = encodePng(w, h, rgb);
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    const cs = chunks(png);
    assert.deepEqual(
      cs.map((c) => c.type),
      ['IHDR', 'IDAT', 'IEND'],
    );
    assert.ok(cs.every((c) => c.crcOk));
    const ihdr = cs[0]?.data as Buffer;
    assert.equal(ihdr.length, 13);
    assert.equal(ihdr.readUInt32BE(0), w);
    assert.equal(ihdr.readUInt32BE(4), h);
    assert.deepEqual([...ihdr.subarray(8)], [8, 2, 0, 0, 0]);
    const raw = inflateSync(cs[1]?.data as Buffer);
    assert.equal(raw.length, (w * 3 + 1) * h);
    for (let y = 0; y < h; y++) {
      assert.equal(raw[y * (w * 3 + 1)], 0);
      assert.deepEqual([...raw.subarray(y * (w * 3 + 1) + 1, (y + 1) * (w * 3 + 1))], [...rgb.subarray(y * w * 3, (y + 1) * w * 3)]);
    }
    assert.throws(() => encodePng(2, 2, new Uint8Array(3)), /expected 12 bytes/);
  });

  it('renders the lung window in gray and lesions in red, and `file` recognises the PNG', () => {
    const volume: HuVolume = {
      geometry: { size: [4, 2, 2], spacing: [1, 1, 1], origin: [0, 0, 0], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
      data: Int16Array.from([-1350, -600, 150, 1000, -1000, -1000, -1000, -1000, 0, 0, 0, 0, 0, 0, 0, 0]),
    };
    const lesion = new Uint8Array(16);
    lesion[4] = 1;
    const rgb = renderSlice(volume, 0, lesion);
    const px = (i: number) => [...rgb.subarray(i * 3, i * 3 + 3)];
    assert.deepEqual(px(0), [0, 0, 0]); // window bottom
    assert.deepEqual(px(1), [128, 128, 128]); // level
    assert.deepEqual(px(2), [255, 255, 255]); // window top
    assert.deepEqual(px(3), [255, 255, 255]);
    const g = Math.round((350 / 1500) * 255);
    assert.deepEqual(px(5), [g, g, g]);
    const [r, gg, b] = px(4);
    assert.ok((r as number) > 100 && gg === b && (gg as number) < g, `lesion pixel ${px(4)}`);
    const png = keyImagePng(volume, 1, lesion);
    const dir = mkdtempSync(join(tmpdir(), 'ctgate-png-'));
    try {
      const file = join(dir, 'k.png');
      writeFileSync(file, png);
      let described = '';
      try {
        described = execFileSync('file', ['-b', file], { encoding: 'utf8' });
      } catch {
        return; // no `file` command here: the structural checks above stand
      }
      assert.match(described, /PNG image data, 4 x 2, 8-bit\/color RGB/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
