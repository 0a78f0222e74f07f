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

/**
 * Writes one slice's stored pixel values into z index k as HU (stored · slope + intercept, rounded, clamped
 * to int16). `bigEndian` for the retired explicit-VR big-endian transfer syntax.
 */
export function fillSlice(volume: HuVolume, k: number, pixels: Uint8Array, meta: SliceMeta, bigEndian = false): void {
  const n = meta.rows * meta.columns;
  if (pixels.byteLength < n * 2) throw new VolumeError(`slice ${meta.sopInstanceUid}: ${pixels.byteLength} bytes of pixel data, expected ${n * 2}`);
  const out = volume.data;
  const base = k * n;
  const { rescaleSlope: m, rescaleIntercept: b } = meta;
  const signed = meta.pixelRepresentation === 1;
  if (bigEndian || pixels.byteOffset % 2 !== 0) {
    const view = new DataView(pixels.buffer, pixels.byteOffset, n * 2);
    for (let i = 0; i < n; i++) {
      const stored = signed ? view.getInt16(i * 2, !bigEndian) : view.getUint16(i * 2, !bigEndian);
      const hu = Math.round(stored * m + b);
      out[base + i] = hu > 32767 ? 32767 : hu < -32768 ? -32768 : hu;
    }
    return;
  }
  // Little-endian and aligned (the usual case): read the bytes in place as 16-bit words.
  const words = signed ? new Int16Array(pixels.buffer, pixels.byteOffset, n) : new Uint16Array(pixels.buffer, pixels.byteOffset, n);
  if (m === 1 && Number.isInteger(b)) {
    // Integer rescale (nearly every CT): no rounding needed, only the int16 clamp.
    for (let i = 0; i < n; i++) {
      const hu = (words[i] as number) + b;
      out[base + i] = hu > 32767 ? 32767 : hu < -32768 ? -32768 : hu;
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const hu = Math.round((words[i] as number) * m + b);
    out[base + i] = hu > 32767 ? 32767 : hu < -32768 ? -32768 : hu;
  }
}
