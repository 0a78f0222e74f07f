import type { Geometry, HuVolume } from './volume.js';

/** What ctgate needs to know about one CT slice to place it in a volume and convert it to HU. */
export interface SliceMeta {
  sopInstanceUid: string;
  seriesInstanceUid: string;
  instanceNumber?: number;
  position: [number, number, number];
  /** Row direction cosines then column direction cosines (ImageOrientationPatient). */
  orientation: [number, number, number, number, number, number];
  /** PixelSpacing: [between rows (y), between columns (x)]. */
  pixelSpacing: [number, number];
  rows: number;
  columns: number;
  bitsAllocated: number;
  pixelRepresentation: number;
  samplesPerPixel: number;
  rescaleSlope: number;
  rescaleIntercept: number;
  sliceThickness?: number;
  frameOfReferenceUid?: string;
  gantryTilt?: number;
}

export class VolumeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VolumeError';
  }
}

/** How a series became a volume: the slice order and anything a reader should know about it. */
export interface VolumePlan {
  geometry: Geometry;
  /** order[k] = index into the input slices of the slice at z index k. */
  order: number[];
  warnings: string[];
}

const cross = (a: number[], b: number[]): [number, number, number] => [
  (a[1] as number) * (b[2] as number) - (a[2] as number) * (b[1] as number),
  (a[2] as number) * (b[0] as number) - (a[0] as number) * (b[2] as number),
  (a[0] as number) * (b[1] as number) - (a[1] as number) * (b[0] as number),
];
const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * (b[i] as number), 0);

export interface PlanOptions {
  /** Relative spread of slice gaps tolerated before the spacing counts as non-uniform. */
  spacingTolerance?: number;
}

/**
 * Orders slices by position along the slice normal (not InstanceNumber) and checks that they form one volume:
 * one orientation, one size, one pixel spacing, no duplicates, uniform spacing (missing slices are reported by
 * where the gap is), no gantry tilt. Throws VolumeError naming the first problem that makes a volume impossible.
 */
export function planVolume(slices: SliceMeta[], opts: PlanOptions = {}): VolumePlan {
  const tol = opts.spacingTolerance ?? 0.05;
  if (slices.length === 0) throw new VolumeError('the series has no slices');
  const first = slices[0] as SliceMeta;
  const series = new Set(slices.map((s) => s.seriesInstanceUid));
  if (series.size > 1) throw new VolumeError(`mixed series: slices come from ${series.size} different series`);
  const frames = new Set(slices.map((s) => s.frameOfReferenceUid ?? ''));
  if (frames.size > 1) throw new VolumeError('mixed frames of reference in one series');
  for (const s of slices) {
    if (s.samplesPerPixel !== 1) throw new VolumeError(`slice ${s.sopInstanceUid} is not grayscale (SamplesPerPixel ${s.samplesPerPixel})`);
    if (s.bitsAllocated !== 16) throw new VolumeError(`slice ${s.sopInstanceUid} has BitsAllocated ${s.bitsAllocated}; CT needs 16`);
    if (s.rows !== first.rows || s.columns !== first.columns)
      throw new VolumeError(`slices differ in size (${first.columns}×${first.rows} and ${s.columns}×${s.rows})`);
    if (s.orientation.some((v, i) => Math.abs(v - (first.orientation[i] as number)) > 1e-3)) throw new VolumeError('slices differ in orientation');
    if (s.pixelSpacing.some((v, i) => Math.abs(v - (first.pixelSpacing[i] as number)) > 1e-4)) throw new VolumeError('slices differ in pixel spacing');
  }
  const rowDir = first.orientation.slice(0, 3);
  const colDir = first.orientation.slice(3, 6);
  const normal = cross(rowDir, colDir);
  const len = Math.hypot(...normal);
  if (Math.abs(len - 1) > 1e-2) throw new VolumeError('ImageOrientationPatient is not two orthogonal unit vectors');
  const pos = slices.map((s, i) => ({ i, d: dot(s.position, normal) }));
  pos.sort((a, b) => a.d - b.d);
  const warnings: string[] = [];
  for (let k = 1; k < pos.length; k++) {
    if (Math.abs((pos[k] as { d: number }).d - (pos[k - 1] as { d: number }).d) < 1e-3) {
      throw new VolumeError(`duplicate slice position at ${(pos[k] as { d: number }).d.toFixed(2)} mm along the normal`);
    }
  }
  let spacingZ = first.sliceThickness ?? 1;
  if (pos.length > 1) {
    const gaps = pos.slice(1).map((p, k) => p.d - (pos[k] as { d: number }).d);
    const sorted = [...gaps].sort((a, b) => a - b);
    spacingZ = sorted[Math.floor(sorted.length / 2)] as number;
    const missing = gaps.map((g, k) => ({ g, k })).filter(({ g }) => g > spacingZ * (1.5 + tol));
    if (missing.length > 0) {
      const where = missing.map(({ g, k }) => `${Math.round(g / spacingZ) - 1} after slice ${k + 1}`).join(', ');
      throw new VolumeError(`missing slices: ${where} (spacing ${spacingZ.toFixed(3)} mm)`);
    }
    const uneven = gaps.filter((g) => Math.abs(g - spacingZ) > spacingZ * tol);
    if (uneven.length > 0) throw new VolumeError(`slice spacing is not uniform (${uneven.length} gaps differ from ${spacingZ.toFixed(3)} mm)`);
    // Gantry tilt: the positions move along something other than the slice normal.
    const last = slices[(pos[pos.length - 1] as { i: number }).i] as SliceMeta;
    const firstSorted = slices[(pos[0] as { i: number }).i] as SliceMeta;
    const step = firstSorted.position.map((v, i) => ((last.position[i] as number) - v) / (pos.length - 1));
    const along = dot(step, normal);
    const off = Math.hypot(...step.map((v, i) => v - along * (normal[i] as number)));
    if (off > 1e-2 * Math.abs(along))
      throw new VolumeError(`gantry tilt: slices shift ${off.toFixed(3)} mm sideways per slice; tilted series are not supported`);
  }
  if ((first.gantryTilt ?? 0) !== 0) warnings.push(`GantryDetectorTilt is ${first.gantryTilt}° but positions show no tilt`);
  const k0 = slices[(pos[0] as { i: number }).i] as SliceMeta;
  return {
    geometry: {
      size: [first.columns, first.rows, slices.length],
      spacing: [first.pixelSpacing[1], first.pixelSpacing[0], spacingZ],
      origin: [...k0.position] as [number, number, number],
      direction: [...rowDir, ...colDir, ...normal] as Geometry['direction'],
    },
    order: pos.map((p) => p.i),
    warnings,
  };
}

export function allocateVolume(geometry: Geometry): HuVolume {
  const [nx, ny, nz] = geometry.size;
  return { geometry, data: new Int16Array(nx * ny * nz) };
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Receives one slice's stored pixel bytes in pieces, as they come off the network, and writes them as HU into
 * z index k: the raw bytes go straight into the slice's place in the volume, and `end` converts them there
 * (stored · slope + intercept, rounded, clamped to int16), so no frame-sized buffer is ever allocated. Bytes past
 * the slice's size are ignored. `bigEndian` for the retired explicit-VR big-endian transfer syntax.
 */
export class SliceWriter {
  private readonly target: Uint8Array;
  private received = 0;

  constructor(
    private readonly volume: HuVolume,
    private readonly k: number,
    private readonly meta: SliceMeta,
    private readonly bigEndian = false,
  ) {
    const n = meta.rows * meta.columns;
    const data = volume.data;
    this.target = new Uint8Array(data.buffer, data.byteOffset + k * n * 2, n * 2);
  }

  write(bytes: Uint8Array): void {
    const room = this.target.length - this.received;
    if (room > 0) this.target.set(bytes.length <= room ? bytes : bytes.subarray(0, room), this.received);
    this.received += bytes.length;
  }

  /** Called after the last byte: checks that the whole slice came (else VolumeError) and converts it to HU in place. */
  end(): void {
    const n = this.meta.rows * this.meta.columns;
    if (this.received < n * 2) throw new VolumeError(`slice ${this.meta.sopInstanceUid}: ${this.received} bytes of pixel data, expected ${n * 2}`);
    storedToHu(this.volume.data, this.k * n, n, this.meta, this.bigEndian);
  }
}

/**
 * Writes one slice's stored pixel values into z index k as HU (stored · slope + intercept, rounded, clamped
 * to int16). `bigEndian` for the retired explicit-VR big-endian transfer syntax.
 */
export function fillSlice(volume: HuVolume, k: number, pixels: Uint8Array, meta: SliceMeta, bigEndian = false): void {
  const n = meta.rows * meta.columns;
  if (pixels.byteLength < n * 2) throw new VolumeError(`slice ${meta.sopInstanceUid}: ${pixels.byteLength} bytes of pixel data, expected ${n * 2}`);
  const w = new SliceWriter(volume, k, meta, bigEndian);
  w.write(pixels);
  w.end();
}

/** Converts the n stored values that sit raw (as the PACS sent them) at out[base…base+n) to HU, in place. */
function storedToHu(out: Int16Array, base: number, n: number, meta: SliceMeta, bigEndian: boolean): void {
  const words = new Uint16Array(out.buffer, out.byteOffset + base * 2, n);
  if (bigEndian === HOST_LITTLE_ENDIAN) swapBytes(words);
  const { rescaleSlope: m, rescaleIntercept: b } = meta;
  const signed = meta.pixelRepresentation === 1;
  if (m === 1 && Number.isInteger(b) && b >= -32768 && b <= 32767) {
    // Integer rescale (nearly every CT): no rounding, only the int16 clamp.
    if (!signed || b !== 0) addInteger(out, base, base + n, b, signed);
    return;
  }
  if (signed) scaleSigned(out.subarray(base, base + n), m, b);
  else scaleUnsigned(words, m, b);
}

function swapBytes(words: Uint16Array): void {
  const n = words.length;
  for (let i = 0; i < n; i++) {
    const v = words[i] as number;
    words[i] = (v >>> 8) | (v << 8);
  }
}

/**
 * out[i] = clamp(stored + b) for i in [from, to), stored being out[i]'s bits read as signed or unsigned, for an
 * integer b within int16. Two values at a time: each 32-bit word holds two 16-bit lanes, added without carries
 * between them and wrapping like int16 (about 2.5× faster in V8 than one value at a time). While adding, it
 * gathers a bound on the stored values; only when that bound says some value may fall outside int16 does a
 * second pass clamp, recognising the values that wrapped by where they landed (see clampWrapped).
 */
function addInteger(out: Int16Array, from: number, to: number, b: number, signed: boolean): void {
  let lo = from;
  let hi = to;
  // A value before the first 4-byte boundary, and an odd one at the end, on their own.
  if (lo < hi && ((out.byteOffset + lo * 2) & 3) !== 0) addOne(out, lo++, b, signed);
  if (((hi - lo) & 1) !== 0) addOne(out, --hi, b, signed);
  if (hi <= lo) return;
  const pairs = new Int32Array(out.buffer, out.byteOffset + lo * 2, (hi - lo) >> 1);
  const both = ((b & 0xffff) * 0x10001) | 0;
  const bits = signed ? wrapAddSigned(pairs, both) : wrapAddUnsigned(pairs, both);
  // The largest value the gathered bits allow: unsigned, stored ≤ max; signed, −max−1 ≤ stored ≤ max.
  let max = (bits | (bits >>> 16)) & 0xffff;
  max |= max >> 1;
  max |= max >> 2;
  max |= max >> 4;
  max |= max >> 8;
  if (signed ? max + b > 32767 || b - max - 1 < -32768 : max + b > 32767) clampWrapped(out.subarray(lo, hi), b, signed);
}

/** In-lane wrapping add of `both` (b in each lane); returns the OR of all stored values. */
function wrapAddUnsigned(pairs: Int32Array, both: number): number {
  const n = pairs.length;
  const low = both & 0x7fff7fff;
  const top = both & 0x80008000;
  let bits = 0;
  for (let i = 0; i < n; i++) {
    const x = pairs[i] as number;
    bits |= x;
    pairs[i] = ((x & 0x7fff7fff) + low) ^ ((x ^ top) & 0x80008000);
  }
  return bits;
}

/** As wrapAddUnsigned; returns the OR of the stored values' magnitudes (v for v ≥ 0, −v−1 below). */
function wrapAddSigned(pairs: Int32Array, both: number): number {
  const n = pairs.length;
  const low = both & 0x7fff7fff;
  const top = both & 0x80008000;
  let bits = 0;
  for (let i = 0; i < n; i++) {
    const x = pairs[i] as number;
    bits |= x ^ Math.imul((x >>> 15) & 0x10001, 0xffff);
    pairs[i] = ((x & 0x7fff7fff) + low) ^ ((x ^ top) & 0x80008000);
  }
  return bits;
}

/**
 * After a wrapping add of b, puts the clamp back. Unsigned stored values give sums in [b, 65535 + b]: those in
 * int16 are ≥ b, and those above 32767 wrapped to [−32768, b − 1]. Signed ones give [b − 32768, 32767 + b]: for
 * b > 0 the ones above 32767 wrapped below b − 32768; for b < 0 the ones below −32768 wrapped above 32767 + b.
 */
function clampWrapped(slot: Int16Array, b: number, signed: boolean): void {
  const n = slot.length;
  if (!signed || b > 0) {
    const below = signed ? b - 32768 : b;
    for (let i = 0; i < n; i++) if ((slot[i] as number) < below) slot[i] = 32767;
  } else {
    const above = 32767 + b;
    for (let i = 0; i < n; i++) if ((slot[i] as number) > above) slot[i] = -32768;
  }
}

function addOne(out: Int16Array, i: number, b: number, signed: boolean): void {
  const stored = signed ? (out[i] as number) : (out[i] as number) & 0xffff;
  out[i] = Math.min(32767, Math.max(-32768, stored + b));
}

function scaleSigned(slot: Int16Array, m: number, b: number): void {
  const n = slot.length;
  for (let i = 0; i < n; i++) {
    const hu = Math.round((slot[i] as number) * m + b);
    slot[i] = Math.min(32767, Math.max(-32768, hu));
  }
}

/** Reads and writes back through the Uint16Array view (storing an int16 value there wraps it to the same bits). */
function scaleUnsigned(words: Uint16Array, m: number, b: number): void {
  const n = words.length;
  for (let i = 0; i < n; i++) {
    const hu = Math.round((words[i] as number) * m + b);
    words[i] = Math.min(32767, Math.max(-32768, hu));
  }
}
