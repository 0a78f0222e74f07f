/**
 * Key images: one axial slice in the lung window with the lesion mask overlaid in semi-transparent red, as a
 * PNG (written here: zlib deflate + CRC-32; no image library). Physicians always see the highlighted regions,
 * positive or negative (DESIGN.md, the paper's pipeline, 7).
 */
import { deflateSync } from 'node:zlib';
import type { HuVolume } from '../imaging/volume.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO-HDLC, as PNG and zlib use it). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = (CRC_TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

export const PNG_SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** An 8-bit PNG: `channels` 1 (grayscale) or 3 (RGB), pixels row by row, top row first. */
export function encodePng(width: number, height: number, pixels: Uint8Array, channels: 1 | 3 = 3): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new Error(`bad image size ${width}×${height}`);
  const stride = width * channels;
  if (pixels.length !== stride * height) throw new Error(`expected ${stride * height} bytes of pixels, got ${pixels.length}`);
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 3 ? 2 : 0; // colour type: truecolour or greyscale
  // compression 0, filter method 0, no interlace
  const raw = new Uint8Array((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter type None
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const parts = [PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 6 })), chunk('IEND', new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export interface KeyImageOptions {
  /** Window centre and width (HU); default the lung window L −600 / W 1500. */
  level?: number;
  width?: number;
  /** Opacity of the red lesion overlay, 0..1; default 0.45. */
  alpha?: number;
}

/** RGB pixels of slice k: grayscale in the window, lesion voxels blended towards red. */
export function renderSlice(volume: HuVolume, k: number, lesion: Uint8Array | null, opts: KeyImageOptions = {}): Uint8Array {
  const [nx, ny, nz] = volume.geometry.size;
  if (!Number.isInteger(k) || k < 0 || k >= nz) throw new Error(`slice ${k} is outside 0..${nz - 1}`);
  const level = opts.level ?? -600;
  const width = opts.width ?? 1500;
  const alpha = opts.alpha ?? 0.45;
  const lo = level - width / 2;
  const scale = 255 / width;
  const base = k * nx * ny;
  const rgb = new Uint8Array(nx * ny * 3);
  for (let p = 0; p < nx * ny; p++) {
    const v = ((volume.data[base + p] as number) - lo) * scale;
    const gray = Math.min(255, Math.max(0, v));
    let r = gray;
    let g = gray;
    let b = gray;
    if (lesion && lesion[base + p] !== 0) {
      r = gray * (1 - alpha) + 255 * alpha;
      g = gray * (1 - alpha);
      b = gray * (1 - alpha);
    }
    rgb[p * 3] = Math.round(r);
    rgb[p * 3 + 1] = Math.round(g);
    rgb[p * 3 + 2] = Math.round(b);
  }
  return rgb;
}

/** A key image of slice k as PNG bytes. */
export function keyImagePng(volume: HuVolume, k: number, lesion: Uint8Array | null, opts: KeyImageOptions = {}): Uint8Array {
  const [nx, ny] = volume.geometry.size;
  return encodePng(nx, ny, renderSlice(volume, k, lesion, opts), 3);
}
