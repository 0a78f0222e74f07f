/**
 * Classical lung segmentation on a HU volume (the paper's step 3: lungs first, later steps see only the lung
 * region). No model: threshold, drop the air outside the body, keep the lung-sized 3-D components, split left
 * and right, then put back what dense disease took out (per-slice closing and hole filling per lung).
 *
 * Which air-filled 3-D components inside the body are lung (each of at least minComponentMl; features in
 * `candidates` of the result):
 *   1. Gas rule. A component whose interior is mostly pure air (more than half of its voxels lying at least
 *      4 mm, and at least one voxel, inside it along every axis are below −950 HU; with fewer than 20 such voxels,
 *      those one voxel inside; with fewer than 20 of those, all its voxels) is gas in the bowel, stomach or an
 *      airway, never lung. Gas reads ≈ −1000 HU with no structure; lung parenchyma is ≈ −900…−700 with vessels,
 *      so its interior median is far above −950 (a lung more than half emphysema below −950 HU would be taken
 *      for gas). The interior is used because partial volume at the wall lifts a gas pocket's mean and share
 *      below −950 by an amount that depends on its size and the grid; its core does not. On TotalSegmentator's
 *      abdomen CT (3 mm) the colon and stomach gas have interior shares 0.95–0.99 (0.77–0.86 after resampling to
 *      1 × 1 × 2.5 mm), the lung bases 0.00; the phantoms' lungs ≈ 0.005, the LIDC slice's 0.00.
 *   2. Size. Of the rest, only components of at least secondComponentRatio of the largest count.
 *   3. Height rule. Lungs lie above the diaphragm and reach up toward the apex; gas and bowel under the
 *      diaphragm do not reach as high. Of the components left by 2, the one that reaches highest (patient z)
 *      sets a level halfway between its top and bottom; a component whose top is below that level is not lung.
 *   4. The two largest components left are the lungs (left = larger mean patient x); with one, it is split at the
 *      least-populated patient-x position near the body midline when it spans it, else it is one lung.
 *
 * Works on any grid (every size is in mm); the pipeline runs it on the model grid (1 × 1 × 2.5 mm).
 * Labels: 0 background, 1 right lung (patient x < split, LPS), 2 left lung.
 *
 * Known limits: consolidation that reaches the pleura over more than about twice the closing radius, or a
 * slice where a lung is entirely consolidated, stays outside the mask (a learned lung model does better
 * there); the trachea and main bronchi are left in when they touch the lungs in 3-D (a few tens of mL). Gas
 * that joins a lung in 3-D (a thin or partial-volumed diaphragm on a coarse grid) stays in that lung's component:
 * the rules judge whole components, they do not cut them. Gas that is not pure air (mottled stool) is only
 * caught by the height rule.
 */
import type { Geometry } from '../imaging/volume.js';
import { close2d, fillHoles2d, floodFromBorder2d, label3d } from './morphology.js';

export const RIGHT_LUNG = 1;
export const LEFT_LUNG = 2;

export interface HuGrid {
  geometry: Geometry;
  data: Int16Array | Float32Array;
}

export interface LungOptions {
  /** Voxels below this (HU) are air-like: lung parenchyma, airways, outside air. Default −320. */
  thresholdHu?: number;
  /** A component can be a lung only with at least this share of the largest non-gas one's voxels. Default 0.1. */
  secondComponentRatio?: number;
  /** Components smaller than this (mL) are never lung. Default 20. */
  minComponentMl?: number;
  /** Per-slice closing radius (mm) that takes back small juxtapleural lesions. Default 5; 0 turns it off. */
  closingMm?: number;
  /**
   * A component whose interior has more than this share of voxels below −950 HU is pure gas (bowel, stomach,
   * airway), never lung. Default 0.5 (its interior median below −950 HU).
   */
  pureAirShare?: number;
}

/** One air-filled 3-D component inside the body of at least minComponentMl, as the lung step judged it. */
export interface ComponentFeatures {
  /** Its number in the 3-D labelling (internal). */
  label: number;
  voxels: number;
  volumeMl: number;
  meanHu: number;
  /** Share of its interior voxels (as the gas rule of the header defines them) below −950 HU. */
  pureAirShare: number;
  /** Highest and lowest patient z (mm, + towards the head) of its voxel centres. */
  topMm: number;
  bottomMm: number;
  /** Mean patient x (mm, LPS: + towards the patient's left). */
  meanXMm: number;
  /**
   * lung: kept; gas: pure air (the gas rule); low: its top is below the middle height of the highest-reaching
   * lung-sized component (the height rule); small: not chosen (under secondComponentRatio of the largest non-gas
   * component, or a third one).
   */
  verdict: 'lung' | 'gas' | 'low' | 'small';
}

export interface LungSegmentation {
  geometry: Geometry;
  /** 0 background, 1 right, 2 left. Same indexing as the input. */
  labels: Uint8Array;
  volumesMl: { right: number; left: number; total: number };
  /** How the two lungs were found: two 3-D components, or one split at the mediastinum. */
  split: 'components' | 'midline' | 'single' | 'none';
  warnings: string[];
  /** The air-filled components of lung size inside the body, largest first, with the verdict on each. */
  candidates: ComponentFeatures[];
}

/** Patient x (mm) as a linear function of the voxel index: x = x0 + ax·i + ay·j + az·k. */
function patientX(g: Geometry): { x0: number; ax: number; ay: number; az: number } {
  const d = g.direction;
  return { x0: g.origin[0], ax: g.spacing[0] * d[0], ay: g.spacing[1] * d[3], az: g.spacing[2] * d[6] };
}

export function segmentLungs(volume: HuGrid, opts: LungOptions = {}): LungSegmentation {
  const g = volume.geometry;
  const [nx, ny, nz] = g.size;
  const [sx, sy, sz] = g.spacing;
  const nxy = nx * ny;
  const n = nxy * nz;
  if (volume.data.length !== n) throw new Error(`volume has ${volume.data.length} voxels, geometry ${nx}×${ny}×${nz}`);
  const threshold = opts.thresholdHu ?? -320;
  const ratio = opts.secondComponentRatio ?? 0.1;
  const voxelMl = (sx * sy * sz) / 1000;
  const minVoxels = Math.max(1, Math.round((opts.minComponentMl ?? 20) / voxelMl));
  const closingMm = opts.closingMm ?? 5;
  const pureAirMax = opts.pureAirShare ?? 0.5;
  const warnings: string[] = [];
  const data = volume.data;
  const px = patientX(g);

  // 1. Air-like voxels, minus the air 4-connected to each slice's border (outside the body). The body is what is
  // not outside: its mean patient x is the midline used to split lungs that touch.
  const air = new Uint8Array(n);
  const outside = new Uint8Array(nxy);
  const stack = new Int32Array(nxy);
  let bodyN = 0;
  let bodyX = 0;
  for (let k = 0; k < nz; k++) {
    const base = k * nxy;
    for (let p = 0; p < nxy; p++) air[base + p] = (data[base + p] as number) < threshold ? 1 : 0;
    const slice = air.subarray(base, base + nxy);
    outside.fill(0);
    floodFromBorder2d(slice, nx, ny, 1, outside, stack);
    for (let j = 0; j < ny; j++) {
      const row = j * nx;
      let cnt = 0;
      let sumI = 0;
      for (let i = 0; i < nx; i++) {
        if (outside[row + i] !== 0) slice[row + i] = 0;
        else {
          cnt++;
          sumI += i;
        }
      }
      bodyN += cnt;
      bodyX += cnt * (px.x0 + px.ay * j + px.az * k) + px.ax * sumI;
    }
  }
  const midline = bodyN > 0 ? bodyX / bodyN : 0;

  // 2. Lung-sized 3-D components, each measured in one pass (see candidateFeatures), then the gas rule and the
  // height rule of the header comment.
  const { labels: comp, sizes } = label3d(air, [nx, ny, nz], 6);
  const out = new Uint8Array(n);
  const candidates = candidateFeatures(comp, sizes, data, g, minVoxels);
  for (const c of candidates) if (c.pureAirShare > pureAirMax) c.verdict = 'gas';
  // Lung-sized relative to the largest non-gas component; of those, the one reaching highest sets the height
  // rule; the two largest that pass it are the lungs.
  const nonGas = candidates.filter((c) => c.verdict !== 'gas');
  const largest = nonGas[0];
  const big = nonGas.filter((c) => largest && c.voxels >= ratio * largest.voxels);
  let ref = big[0];
  for (const c of big) if (ref && c.topMm > ref.topMm) ref = c;
  const midZ = ref ? (ref.topMm + ref.bottomMm) / 2 : 0;
  const lungs: ComponentFeatures[] = [];
  for (const c of big) {
    if (c.topMm < midZ) c.verdict = 'low';
    else if (lungs.length < 2) {
      c.verdict = 'lung';
      lungs.push(c);
    }
  }
  const [first, secondC] = lungs;
  if (!first) {
    return {
      geometry: g,
      labels: out,
      volumesMl: { right: 0, left: 0, total: 0 },
      split: 'none',
      warnings: [
        candidates.length > 0
          ? "no lung inside the body: its only air-filled regions of a lung's size are pure gas (bowel, stomach, airway)"
          : 'no air-filled region the size of a lung inside the body',
      ],
      candidates,
    };
  }
  const c1 = first.label;
  const c2 = secondC ? secondC.label : -1;
  const mean1 = first.meanXMm;
  const mean2 = secondC ? secondC.meanXMm : 0;

  let split: LungSegmentation['split'];
  if (c2 > 0) {
    split = 'components';
    const leftC = mean1 > mean2 ? c1 : c2;
    for (let i = 0; i < n; i++) {
      const c = comp[i] as number;
      if (c === c1 || c === c2) out[i] = c === leftC ? LEFT_LUNG : RIGHT_LUNG;
    }
  } else {
    // One component: both lungs touching (or joined by the airways), or one lung. Split at the least-populated
    // patient-x position near the body midline when the component spans it; otherwise it is one lung.
    const binW = Math.min(sx, sy);
    const corners: number[] = [];
    for (const k of [0, nz - 1]) for (const j of [0, ny - 1]) for (const i of [0, nx - 1]) corners.push(px.x0 + px.ax * i + px.ay * j + px.az * k);
    const xMin = Math.min(...corners) - binW;
    const bins = new Float64Array(Math.ceil((Math.max(...corners) + binW - xMin) / binW) + 1);
    let onLeft = 0;
    for (let k = 0; k < nz; k++)
      for (let j = 0; j < ny; j++) {
        const row = k * nxy + j * nx;
        const xr = px.x0 + px.ay * j + px.az * k;
        for (let i = 0; i < nx; i++) {
          if (comp[row + i] !== c1) continue;
          const x = xr + px.ax * i;
          const b = Math.floor((x - xMin) / binW);
          bins[b] = (bins[b] as number) + 1;
          if (x > midline) onLeft++;
        }
      }
    const leftShare = onLeft / first.voxels;
    if (leftShare > 0.15 && leftShare < 0.85) {
      split = 'midline';
      // Least-populated bin within 50 mm of the midline (ties: the closest to it).
      const lo = Math.max(0, Math.floor((midline - 50 - xMin) / binW));
      const hi = Math.min(bins.length - 1, Math.ceil((midline + 50 - xMin) / binW));
      let best = Math.floor((midline - xMin) / binW);
      const dist = (b: number) => Math.abs(b * binW + xMin - midline);
      for (let b = lo; b <= hi; b++) {
        const vb = bins[b] as number;
        const vBest = bins[best] as number;
        if (vb < vBest || (vb === vBest && dist(b) < dist(best))) best = b;
      }
      const cut = xMin + (best + 0.5) * binW;
      for (let k = 0; k < nz; k++)
        for (let j = 0; j < ny; j++) {
          const row = k * nxy + j * nx;
          const xr = px.x0 + px.ay * j + px.az * k;
          for (let i = 0; i < nx; i++) if (comp[row + i] === c1) out[row + i] = xr + px.ax * i > cut ? LEFT_LUNG : RIGHT_LUNG;
        }
    } else {
      split = 'single';
      const side = mean1 > midline ? LEFT_LUNG : RIGHT_LUNG;
      warnings.push(`only one lung found (the ${side === LEFT_LUNG ? 'left' : 'right'})`);
      for (let i = 0; i < n; i++) if (comp[i] === c1) out[i] = side;
    }
  }

  // 3. Per lung and slice: closing (juxtapleural lesions) then hole filling (vessels, nodules, consolidation).
  fillLungs(out, g, closingMm);

  let right = 0;
  let left = 0;
  for (let i = 0; i < n; i++) {
    const l = out[i];
    if (l === RIGHT_LUNG) right++;
    else if (l === LEFT_LUNG) left++;
  }
  const r3 = (v: number) => Math.round(v * 1000) / 1000;
  return {
    geometry: g,
    labels: out,
    volumesMl: { right: r3(right * voxelMl), left: r3(left * voxelMl), total: r3((right + left) * voxelMl) },
    split,
    warnings,
    candidates,
  };
}

/** Depth (mm) below a component's surface from which its voxels count as interior for the gas rule. */
const INTERIOR_MM = 4;

/**
 * Features of every component of at least minVoxels, largest first, in one pass over the volume: voxel count,
 * mean HU, share of interior voxels below −950 HU, patient-z range and mean patient x.
 */
function candidateFeatures(comp: Int32Array, sizes: number[], data: Int16Array | Float32Array, g: Geometry, minVoxels: number): ComponentFeatures[] {
  const [nx, ny, nz] = g.size;
  const nxy = nx * ny;
  const voxelMl = (g.spacing[0] * g.spacing[1] * g.spacing[2]) / 1000;
  // slot[c] = 1 + index into the per-candidate sums, 0 for a component too small to be a lung.
  const slot = new Int32Array(sizes.length + 1);
  const order = sizes
    .map((s, c) => ({ c: c + 1, s }))
    .filter((e) => e.s >= minVoxels)
    .sort((a, b) => b.s - a.s);
  order.forEach((e, q) => {
    slot[e.c] = q + 1;
  });
  const m = order.length;
  const sumHu = new Float64Array(m);
  const below = new Float64Array(m);
  const inner = new Float64Array(m);
  const innerBelow = new Float64Array(m);
  const shallow = new Float64Array(m);
  const shallowBelow = new Float64Array(m);
  const sumX = new Float64Array(m);
  const top = new Float64Array(m).fill(-Infinity);
  const bottom = new Float64Array(m).fill(Infinity);
  if (m === 0) return [];
  const px = patientX(g);
  const d = g.direction;
  const pz = { z0: g.origin[2], ax: g.spacing[0] * d[2], ay: g.spacing[1] * d[5], az: g.spacing[2] * d[8] };
  // Interior: the voxels ±r along each axis (r ≥ INTERIOR_MM, at least one voxel) are in the same component.
  const rx = Math.max(1, Math.ceil(INTERIOR_MM / g.spacing[0] - 1e-6));
  const ry = Math.max(1, Math.ceil(INTERIOR_MM / g.spacing[1] - 1e-6));
  const rz = Math.max(1, Math.ceil(INTERIOR_MM / g.spacing[2] - 1e-6));
  const oy = ry * nx;
  const oz = rz * nxy;
  for (let k = 0; k < nz; k++) {
    const kIn = k >= rz && k < nz - rz;
    const k1 = k > 0 && k < nz - 1;
    for (let j = 0; j < ny; j++) {
      const row = k * nxy + j * nx;
      const jkIn = kIn && j >= ry && j < ny - ry;
      const jk1 = k1 && j > 0 && j < ny - 1;
      const xr = px.x0 + px.ay * j + px.az * k;
      const zr = pz.z0 + pz.ay * j + pz.az * k;
      for (let i = 0; i < nx; i++) {
        const p = row + i;
        const c = comp[p] as number;
        if (c === 0) continue;
        const q = (slot[c] as number) - 1;
        if (q < 0) continue;
        const v = data[p] as number;
        sumHu[q] = (sumHu[q] as number) + v;
        sumX[q] = (sumX[q] as number) + xr + px.ax * i;
        const z = zr + pz.ax * i;
        if (z > (top[q] as number)) top[q] = z;
        if (z < (bottom[q] as number)) bottom[q] = z;
        const low = v < -950 ? 1 : 0;
        below[q] = (below[q] as number) + low;
        if (
          jk1 &&
          i > 0 &&
          i < nx - 1 &&
          comp[p - 1] === c &&
          comp[p + 1] === c &&
          comp[p - nx] === c &&
          comp[p + nx] === c &&
          comp[p - nxy] === c &&
          comp[p + nxy] === c
        ) {
          shallow[q] = (shallow[q] as number) + 1;
          shallowBelow[q] = (shallowBelow[q] as number) + low;
        } else continue;
        if (
          jkIn &&
          i >= rx &&
          i < nx - rx &&
          comp[p - rx] === c &&
          comp[p + rx] === c &&
          comp[p - oy] === c &&
          comp[p + oy] === c &&
          comp[p - oz] === c &&
          comp[p + oz] === c
        ) {
          inner[q] = (inner[q] as number) + 1;
          innerBelow[q] = (innerBelow[q] as number) + low;
        }
      }
    }
  }
  return order.map((e, q) => {
    const inn = inner[q] as number;
    const sha = shallow[q] as number;
    const pureAirShare = inn >= 20 ? (innerBelow[q] as number) / inn : sha >= 20 ? (shallowBelow[q] as number) / sha : (below[q] as number) / e.s;
    return {
      label: e.c,
      voxels: e.s,
      volumeMl: Math.round(e.s * voxelMl * 1000) / 1000,
      meanHu: (sumHu[q] as number) / e.s,
      pureAirShare,
      topMm: top[q] as number,
      bottomMm: bottom[q] as number,
      meanXMm: (sumX[q] as number) / e.s,
      verdict: 'small',
    };
  });
}

/** Closing and hole filling of each lung, slice by slice, inside its bounding box (plus room for the disk). */
function fillLungs(labels: Uint8Array, g: Geometry, closingMm: number): void {
  const [nx, ny, nz] = g.size;
  const [sx, sy] = g.spacing;
  const nxy = nx * ny;
  const pad = closingMm > 0 ? Math.ceil(closingMm / Math.min(sx, sy)) + 2 : 1;
  let scratch = new Uint8Array(0);
  let stack = new Int32Array(0);
  // Per slice, the bounding boxes of both lungs in one pass: [x0, x1, y0, y1] for right then left.
  const bb = new Int32Array(8);
  for (let k = 0; k < nz; k++) {
    const base = k * nxy;
    bb.set([nx, -1, ny, -1, nx, -1, ny, -1]);
    for (let j = 0; j < ny; j++) {
      const row = base + j * nx;
      for (let i = 0; i < nx; i++) {
        const l = labels[row + i] as number;
        if (l === 0) continue;
        const o = l === RIGHT_LUNG ? 0 : 4;
        if (i < (bb[o] as number)) bb[o] = i;
        if (i > (bb[o + 1] as number)) bb[o + 1] = i;
        if (j < (bb[o + 2] as number)) bb[o + 2] = j;
        bb[o + 3] = j;
      }
    }
    for (const side of [RIGHT_LUNG, LEFT_LUNG]) {
      const o = side === RIGHT_LUNG ? 0 : 4;
      const x0 = bb[o] as number;
      const x1 = bb[o + 1] as number;
      const y0 = bb[o + 2] as number;
      const y1 = bb[o + 3] as number;
      if (x1 < 0) continue;
      // A box with `pad` empty pixels on every side (outside the slice counts as empty).
      const bx0 = x0 - pad;
      const by0 = y0 - pad;
      const w = x1 - x0 + 1 + 2 * pad;
      const h = y1 - y0 + 1 + 2 * pad;
      if (scratch.length < w * h) {
        scratch = new Uint8Array(w * h * 2);
        stack = new Int32Array(w * h * 2);
      }
      const box = new Uint8Array(w * h);
      for (let j = y0; j <= y1; j++) {
        const src = base + j * nx;
        const dst = (j - by0) * w - bx0;
        for (let i = x0; i <= x1; i++) if (labels[src + i] === side) box[dst + i] = 1;
      }
      if (closingMm > 0) close2d(box, w, h, sx, sy, closingMm);
      fillHoles2d(box, w, h, scratch, stack);
      for (let y = 0; y < h; y++) {
        const j = by0 + y;
        if (j < 0 || j >= ny) continue;
        const row = base + j * nx;
        for (let x = 0; x < w; x++) {
          const i = bx0 + x;
          if (i < 0 || i >= nx || box[y * w + x] === 0) continue;
          if (labels[row + i] === 0) labels[row + i] = side;
        }
      }
    }
  }
}

/** Dice coefficient of two masks (non-zero = in). 1 when both are empty. */
export function dice(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error(`masks differ in size (${a.length}, ${b.length})`);
  let inter = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] !== 0;
    const y = b[i] !== 0;
    if (x) na++;
    if (y) nb++;
    if (x && y) inter++;
  }
  return na + nb === 0 ? 1 : (2 * inter) / (na + nb);
}
