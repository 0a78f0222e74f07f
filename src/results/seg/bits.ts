/**
 * BINARY segmentation pixel data (PS3.5 §8.1.1, PS3.3 C.8.20.2): one bit per pixel, the first pixel in the
 * least significant bit of the first byte, and the frames one after the other with no padding between them, so
 * a frame whose rows × columns is not a multiple of 8 starts in the middle of a byte. Only the end of the whole
 * value is padded (to an even length).
 */

function setBit(out: Uint8Array, bit: number): void {
  const i = bit >>> 3;
  out[i] = (out[i] as number) | (1 << (bit & 7));
}

/** Packs frames of 0/non-zero pixels (each `frameLength` long, e.g. views on a mask's slices) bit-continuously; even length. */
export function packFrames(frames: readonly Uint8Array[], frameLength: number): Uint8Array {
  const bytes = Math.ceil((frames.length * frameLength) / 8);
  const out = new Uint8Array(bytes + (bytes % 2));
  for (let f = 0; f < frames.length; f++) {
    const px = frames[f] as Uint8Array;
    if (px.length !== frameLength) throw new RangeError(`frame ${f + 1} has ${px.length} pixels, not ${frameLength}`);
    const base = f * frameLength;
    let p = 0;
    // Up to the next byte boundary bit by bit, then whole bytes, then the tail.
    for (; p < frameLength && (base + p) % 8 !== 0; p++) if (px[p]) setBit(out, base + p);
    for (; p + 8 <= frameLength; p += 8) {
      out[(base + p) >>> 3] =
        (px[p] ? 1 : 0) |
        (px[p + 1] ? 2 : 0) |
        (px[p + 2] ? 4 : 0) |
        (px[p + 3] ? 8 : 0) |
        (px[p + 4] ? 16 : 0) |
        (px[p + 5] ? 32 : 0) |
        (px[p + 6] ? 64 : 0) |
        (px[p + 7] ? 128 : 0);
    }
    for (; p < frameLength; p++) if (px[p]) setBit(out, base + p);
  }
  return out;
}

/** Frame `index` (0-based) of bit-continuous frames of `frameLength` pixels, as 0/1 bytes. */
export function unpackFrame(packed: Uint8Array, frameLength: number, index: number): Uint8Array {
  const base = index * frameLength;
  if (Math.ceil((base + frameLength) / 8) > packed.length) throw new RangeError(`frame ${index + 1} is beyond the end of the pixel data`);
  const out = new Uint8Array(frameLength);
  for (let p = 0; p < frameLength; p++) {
    const bit = base + p;
    out[p] = ((packed[bit >>> 3] as number) >>> (bit & 7)) & 1;
  }
  return out;
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let v = b; v; v >>= 1) n += v & 1;
  return n;
});

/** Set bits in [fromBit, toBit) of packed data. */
export function countBits(packed: Uint8Array, fromBit: number, toBit: number): number {
  let n = 0;
  let bit = fromBit;
  for (; bit < toBit && bit % 8 !== 0; bit++) n += ((packed[bit >>> 3] as number) >>> (bit & 7)) & 1;
  for (; bit + 8 <= toBit; bit += 8) n += POPCOUNT[packed[bit >>> 3] as number] as number;
  for (; bit < toBit; bit++) n += ((packed[bit >>> 3] as number) >>> (bit & 7)) & 1;
  return n;
}
