/**
 * Reads 8-bit, non-interlaced PNGs (grayscale, grayscale + alpha, RGB, RGBA) back to raw pixels: the key-image PNGs
 * the analysis keeps (src/inference/key-images.ts encodePng), so the result stages can make DICOM from what the
 * analysis checkpoint holds (PNG is lossless: exactly the pixels that were rendered), and screenshots in tests. All
 * five row filters are undone; other bit depths, palettes and interlacing are refused. Chunk CRCs are not checked:
 * zlib's own checksum covers the pixel data.
 */
import { inflateSync } from 'node:zlib';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export interface DecodedPng {
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
  /** Row by row, top row first, `channels` bytes a pixel. */
  pixels: Uint8Array;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

export function decodePng(png: Uint8Array): DecodedPng {
  if (png.length < 8 || SIGNATURE.some((b, i) => png[i] !== b)) throw new Error('not a PNG (bad signature)');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let width = 0;
  let height = 0;
  let channels: DecodedPng['channels'] = 3;
  const idat: Uint8Array[] = [];
  let ended = false;
  for (let at = 8; at + 12 <= png.length && !ended; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + length);
    if (data.length !== length) throw new Error(`PNG chunk ${type} is truncated`);
    if (type === 'IHDR') {
      if (length !== 13) throw new Error('PNG IHDR has a bad length');
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, colour, compression, filter, interlace] = data.subarray(8, 13);
      const byColour: Record<number, DecodedPng['channels']> = { 0: 1, 4: 2, 2: 3, 6: 4 };
      const c = byColour[colour as number];
      if (depth !== 8 || c === undefined || compression !== 0 || filter !== 0 || interlace !== 0)
        throw new Error(
          `unsupported PNG (bit depth ${depth}, colour type ${colour}, interlace ${interlace}): only 8-bit grayscale or RGB, with or without alpha`,
        );
      channels = c;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') ended = true;
    at += 12 + length;
  }
  if (width < 1 || height < 1) throw new Error('PNG has no IHDR');
  if (!ended) throw new Error('PNG has no IEND (truncated)');
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== (stride + 1) * height) throw new Error(`PNG image data holds ${raw.length} bytes, ${(stride + 1) * height} expected`);
  const pixels = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)] as number;
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    const up = row - stride;
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? (pixels[row + i - channels] as number) : 0;
      const b = y > 0 ? (pixels[up + i] as number) : 0;
      const c = y > 0 && i >= channels ? (pixels[up + i - channels] as number) : 0;
      const x = src[i] as number;
      let v: number;
      switch (filter) {
        case 0:
          v = x;
          break;
        case 1:
          v = x + a;
          break;
        case 2:
          v = x + b;
          break;
        case 3:
          v = x + ((a + b) >> 1);
          break;
        case 4:
          v = x + paeth(a, b, c);
          break;
        default:
          throw new Error(`PNG row ${y} has unknown filter type ${filter}`);
      }
      pixels[row + i] = v & 0xff;
    }
  }
  return { width, height, channels, pixels };
}
