import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { packFrames, unpackFrame } from '../../src/results/seg/bits.js';

/** A reproducible 0/1 pattern with about a third set. */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = (s >>> 16) % 3 === 0 ? 1 : 0;
  }
  return out;
}

/** The packing written out bit by bit, straight from the standard's wording. */
function naivePack(frames: Uint8Array[], frameLength: number): Uint8Array {
  const bits = frames.length * frameLength;
  const out = new Uint8Array(Math.ceil(bits / 8) + (Math.ceil(bits / 8) % 2));
  frames.forEach((f, i) => {
    f.forEach((v, p) => {
      const bit = i * frameLength + p;
      if (v) out[bit >> 3] = (out[bit >> 3] as number) | (1 << (bit % 8));
    });
  });
  return out;
}

describe('SEG bit packing', () => {
  it('puts the first pixel in the least significant bit', () => {
    const packed = packFrames([Uint8Array.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])], 10);
    assert.deepEqual([...packed], [0b00000001, 0b00000010]);
  });

  it('continues frames bit by bit when rows × columns is not a multiple of 8 (97 × 93)', () => {
    const len = 97 * 93; // 9021 = 8 · 1127 + 5: frame 2 starts at bit 5 of a byte
    const frames = [pattern(len, 1), pattern(len, 2), pattern(len, 3)];
    const packed = packFrames(frames, len);
    assert.equal(packed.length % 2, 0, 'even length');
    assert.equal(packed.length, Math.ceil((3 * len) / 8) + (Math.ceil((3 * len) / 8) % 2));
    assert.deepEqual(packed, naivePack(frames, len));
    for (let f = 0; f < 3; f++) assert.deepEqual(unpackFrame(packed, len, f), frames[f]);
    // The first pixel of frame 2 is bit 5 of byte 1127.
    const one = new Uint8Array(len);
    one[0] = 1;
    const p = packFrames([new Uint8Array(len), one], len);
    assert.equal(p[1127], 1 << 5);
  });

  for (const [rows, cols] of [
    [1, 1],
    [3, 5],
    [7, 9],
    [16, 16],
  ] as const) {
    it(`round-trips ${rows} × ${cols} frames`, () => {
      const len = rows * cols;
      const frames = Array.from({ length: 11 }, (_, i) => pattern(len, i + 10));
      const packed = packFrames(frames, len);
      assert.deepEqual(packed, naivePack(frames, len));
      frames.forEach((f, i) => {
        assert.deepEqual(unpackFrame(packed, len, i), f);
      });
    });
  }

  it('treats any non-zero value as set and rejects frames of the wrong size', () => {
    assert.deepEqual([...packFrames([Uint8Array.from([255, 2, 0, 1])], 4)], [0b1011, 0]);
    assert.throws(() => packFrames([new Uint8Array(3)], 4), /3 pixels, not 4/);
    assert.throws(() => unpackFrame(new Uint8Array(2), 9, 1), /beyond the end/);
  });
});
