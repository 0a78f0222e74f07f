/**
 * Measurements a reader sees next to the verdict: lesion volume, share of each lung involved, lesion count,
 * laterality, peripheral (subpleural) share, and the key slices. Pure functions of masks and geometry.
 */
import type { Geometry } from '../imaging/volume.js';
import { LEFT_LUNG, RIGHT_LUNG } from './lungs.js';
import { boundingBox, label3d, squaredDistanceTo } from './morphology.js';

export interface LesionMeasurements {
  lesionVolumeMl: number;
  lesionVolumeMlBySide: { left: number; right: number };
  lungVolumeMl: { left: number; right: number; total: number };
  /** Lesion volume as a percentage of each lung's volume (0 when that lung is empty). */
  lungInvolvementPercent: { left: number; right: number; total: number };
  /** 3-D connected components (26-connected) of the lesion mask, after small ones are dropped. */
  lesionCount: number;
  /** Both lungs hold lesion. */
  bilateral: boolean;
  /** Share of lesion voxels within peripheralMm of the lung boundary; null without lesion. */
  peripheralShare: number | null;
}

export interface MeasureOptions {
  /** Components smaller than this (mL) are removed from the lesion mask (in place) and not counted. Default 0.05. */
  minLesionMl?: number;
  /** Distance (mm) from the lung boundary that counts as peripheral. Default 10. */
  peripheralMm?: number;
}

const round = (v: number, digits: number) => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

/**
 * Measures a lesion mask against a lung label map (0 / 1 right / 2 left) on one grid. Lesion voxels outside
 * the lungs are cleared first, then components under minLesionMl (both in place, so the caller's mask is the
 * one that was measured).
 */
export function measureLesions(geometry: Geometry, lungLabels: Uint8Array, lesion: Uint8Array, opts: MeasureOptions = {}): LesionMeasurements {
  const [nx, ny, nz] = geometry.size;
  const [sx, sy, sz] = geometry.spacing;
  const n = nx * ny * nz;
  if (lungLabels.length !== n || lesion.length !== n) throw new Error(`masks must have ${n} voxels (${lungLabels.length}, ${lesion.length})`);
  const voxelMl = (sx * sy * sz) / 1000;
  for (let i = 0; i < n; i++) if (lungLabels[i] === 0) lesion[i] = 0;
  const minVoxels = Math.ceil((opts.minLesionMl ?? 0.05) / voxelMl - 1e-9);
  const { labels, sizes } = label3d(lesion, [nx, ny, nz], 26);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const c = labels[i] as number;
    if (c !== 0 && (sizes[c - 1] as number) < minVoxels) lesion[i] = 0;
  }
  for (const s of sizes) if (s >= minVoxels) count++;

  let lungR = 0;
  let lungL = 0;
  let lesR = 0;
  let lesL = 0;
  for (let i = 0; i < n; i++) {
    const l = lungLabels[i];
    if (l === RIGHT_LUNG) {
      lungR++;
      if (lesion[i] !== 0) lesR++;
    } else if (l === LEFT_LUNG) {
      lungL++;
      if (lesion[i] !== 0) lesL++;
    }
  }
  const les = lesR + lesL;
  let peripheralShare: number | null = null;
  if (les > 0) {
    // Distance to the nearest non-lung voxel, computed only in the lesions' box grown by the distance limit:
    // any non-lung voxel within that distance of a lesion lies inside it, so the answer is exact.
    const limMm = opts.peripheralMm ?? 10;
    const bb = boundingBox(lesion, geometry.size) as [number, number, number, number, number, number];
    const lo = [0, 0, 0];
    const dims = [0, 0, 0];
    for (let a = 0; a < 3; a++) {
      const grow = Math.ceil(limMm / (geometry.spacing[a] as number)) + 1;
      lo[a] = Math.max(0, (bb[a] as number) - grow);
      dims[a] = Math.min((geometry.size[a] as number) - 1, (bb[a + 3] as number) + grow) - (lo[a] as number) + 1;
    }
    const [lx, ly, lz] = lo as [number, number, number];
    const [bx, by, bz] = dims as [number, number, number];
    const outside = new Uint8Array(bx * by * bz);
    for (let z = 0; z < bz; z++)
      for (let y = 0; y < by; y++) {
        const src = ((lz + z) * ny + ly + y) * nx + lx;
        const dst = (z * by + y) * bx;
        for (let x = 0; x < bx; x++) outside[dst + x] = lungLabels[src + x] === 0 ? 1 : 0;
      }
    const d2 = squaredDistanceTo(outside, [bx, by, bz], [sx, sy, sz]);
    const lim = limMm ** 2 + 1e-9;
    let near = 0;
    for (let z = 0; z < bz; z++)
      for (let y = 0; y < by; y++) {
        const src = ((lz + z) * ny + ly + y) * nx + lx;
        const dst = (z * by + y) * bx;
        for (let x = 0; x < bx; x++) if (lesion[src + x] !== 0 && (d2[dst + x] as number) <= lim) near++;
      }
    peripheralShare = round(near / les, 4);
  }
  const pct = (a: number, b: number) => (b > 0 ? round((100 * a) / b, 2) : 0);
  return {
    lesionVolumeMl: round(les * voxelMl, 3),
    lesionVolumeMlBySide: { left: round(lesL * voxelMl, 3), right: round(lesR * voxelMl, 3) },
    lungVolumeMl: { left: round(lungL * voxelMl, 1), right: round(lungR * voxelMl, 1), total: round((lungL + lungR) * voxelMl, 1) },
    lungInvolvementPercent: { left: pct(lesL, lungL), right: pct(lesR, lungR), total: pct(les, lungL + lungR) },
    lesionCount: count,
    bilateral: lesL > 0 && lesR > 0,
    peripheralShare,
  };
}

/**
 * What the models saw, in the words the results use (DESIGN.md: a negative includes other pneumonias, tumours, old
 * lesions and healthy lungs — so a negative is split by whether there is opacity at all):
 * - 'covid-19-like': lesion at least minOpacityMl and the classifier at or above its threshold;
 * - 'other-opacity': lesion at least minOpacityMl, but the classifier does not call it COVID-19-like (another
 *   pneumonia, a mass or nodule, scarring, atelectasis… — never to be coded as COVID-19);
 * - 'no-significant-opacity': lesion volume below minOpacityMl (whatever the classifier says: it reads the lesion
 *   mask, and without lesion there is nothing for it to have called COVID-19-like);
 * - 'not-assessable': the models could not judge the study.
 */
export type Category = 'covid-19-like' | 'other-opacity' | 'no-significant-opacity' | 'not-assessable';

/** Lesion volume (mL) below which a study has no significant opacity, when the manifest states none: 1 cm sphere. */
export const DEFAULT_MIN_OPACITY_ML = 0.5;

export interface CategoryInput {
  /** Classifier probability; null when not assessable. */
  probability: number | null;
  threshold: number;
  /** Measured lesion volume (mL); null when not assessable. */
  lesionVolumeMl: number | null;
  minOpacityMl: number;
}

/** The category of a result (see Category); a study without probability or measurements is not assessable. */
export function categorize({ probability, threshold, lesionVolumeMl, minOpacityMl }: CategoryInput): Category {
  if (probability === null || lesionVolumeMl === null || !Number.isFinite(probability) || !Number.isFinite(lesionVolumeMl)) return 'not-assessable';
  if (lesionVolumeMl < minOpacityMl) return 'no-significant-opacity';
  return probability >= threshold ? 'covid-19-like' : 'other-opacity';
}

/** The positive / negative verdict of a category (positive only for 'covid-19-like'). */
export function verdictOf(category: Category): 'positive' | 'negative' | 'not-assessable' {
  return category === 'covid-19-like' ? 'positive' : category === 'not-assessable' ? 'not-assessable' : 'negative';
}

export interface KeySlice {
  /** z index in the original series (volume order, 0 = lowest position along the slice normal). */
  index: number;
  lesionAreaMm2: number;
}

/** The `count` slices with the largest lesion area (largest first; ties: lower index first); none without lesion. */
export function keySlices(mask: Uint8Array, geometry: Geometry, count = 3): KeySlice[] {
  const [nx, ny, nz] = geometry.size;
  const nxy = nx * ny;
  const area = geometry.spacing[0] * geometry.spacing[1];
  const perSlice: KeySlice[] = [];
  for (let k = 0; k < nz; k++) {
    let c = 0;
    const base = k * nxy;
    for (let p = 0; p < nxy; p++) if (mask[base + p] !== 0) c++;
    if (c > 0) perSlice.push({ index: k, lesionAreaMm2: round(c * area, 2) });
  }
  perSlice.sort((a, b) => b.lesionAreaMm2 - a.lesionAreaMm2 || a.index - b.index);
  return perSlice.slice(0, count);
}
