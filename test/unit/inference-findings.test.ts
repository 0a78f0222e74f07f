import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resample } from '../../src/imaging/resample.js';
import type { Geometry } from '../../src/imaging/volume.js';
import { categorize, DEFAULT_MIN_OPACITY_ML, keySlices, measureLesions, verdictOf } from '../../src/inference/findings.js';
import { LEFT_LUNG, RIGHT_LUNG } from '../../src/inference/lungs.js';
import { maskToGrid, restrictToLungs } from '../../src/inference/pipeline.js';

const geometry: Geometry = { size: [60, 40, 20], spacing: [1, 1, 2.5], origin: [-30, -20, 0], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
const [NX, NY, NZ] = geometry.size;
const idx = (x: number, y: number, z: number) => x + NX * (y + NY * z);

function fillBox(m: Uint8Array, v: number, [x0, x1]: [number, number], [y0, y1]: [number, number], [z0, z1]: [number, number]): number {
  let n = 0;
  for (let z = z0; z <= z1; z++)
    for (let y = y0; y <= y1; y++)
      for (let x = x0; x <= x1; x++) {
        m[idx(x, y, z)] = v;
        n++;
      }
  return n;
}

/** Right lung x 2..27, left lung x 32..57 (patient x > 0), y 5..34, z 2..17: 26 × 30 × 16 voxels of 2.5 mm³ each. */
function lungs(): Uint8Array {
  const l = new Uint8Array(NX * NY * NZ);
  fillBox(l, RIGHT_LUNG, [2, 27], [5, 34], [2, 17]);
  fillBox(l, LEFT_LUNG, [32, 57], [5, 34], [2, 17]);
  return l;
}
const LUNG_VOXELS = 26 * 30 * 16;

describe('findings measurements', () => {
  it('measures volume, involvement, count, laterality and peripheral share on known masks', () => {
    const lung = lungs();
    const lesion = new Uint8Array(lung.length);
    // Right: a 4×4×4 cube deep inside (> 10 mm from every lung edge). Left: a cube in the lung's corner (subpleural).
    fillBox(lesion, 1, [13, 16], [18, 21], [8, 11]);
    fillBox(lesion, 1, [32, 35], [5, 8], [2, 5]);
    lesion[idx(50, 30, 14)] = 1; // a one-voxel speck: under 0.05 mL, dropped
    fillBox(lesion, 1, [28, 31], [0, 3], [0, 3]); // outside the lungs: cleared
    const m = measureLesions(geometry, lung, lesion);
    const voxelMl = 2.5 / 1000;
    assert.equal(m.lesionVolumeMl, 128 * voxelMl);
    assert.deepEqual(m.lesionVolumeMlBySide, { left: 64 * voxelMl, right: 64 * voxelMl });
    assert.deepEqual(m.lungVolumeMl, { left: LUNG_VOXELS * voxelMl, right: LUNG_VOXELS * voxelMl, total: 2 * LUNG_VOXELS * voxelMl });
    const pct = Math.round((10000 * 64) / LUNG_VOXELS) / 100;
    assert.deepEqual(m.lungInvolvementPercent, { left: pct, right: pct, total: pct });
    assert.equal(m.lesionCount, 2);
    assert.equal(m.bilateral, true);
    assert.equal(m.peripheralShare, 0.5);
    assert.equal(lesion[idx(50, 30, 14)], 0, 'the speck is removed from the mask too');
    assert.equal(lesion[idx(29, 1, 1)], 0);
  });

  it('counts diagonal neighbours as one lesion, and reports no peripheral share without lesion', () => {
    const lung = lungs();
    const lesion = new Uint8Array(lung.length);
    fillBox(lesion, 1, [10, 13], [10, 13], [5, 8]);
    fillBox(lesion, 1, [14, 17], [14, 17], [9, 12]); // touches the first only at a corner
    const m = measureLesions(geometry, lung, lesion, { minLesionMl: 0 });
    assert.equal(m.lesionCount, 1);
    assert.equal(m.bilateral, false);
    const none = measureLesions(geometry, lung, new Uint8Array(lung.length));
    assert.equal(none.peripheralShare, null);
    assert.equal(none.lesionCount, 0);
    assert.equal(none.lesionVolumeMl, 0);
  });

  it('uses the peripheral distance given', () => {
    const lung = lungs();
    const lesion = new Uint8Array(lung.length);
    // x 13..16 in a lung spanning x 2..27: columns 13 and 16 are 12 mm from the nearest non-lung voxel, 14 and 15 are 13 mm.
    fillBox(lesion, 1, [13, 16], [18, 21], [8, 11]);
    assert.equal(measureLesions(geometry, lung, lesion.slice(), { peripheralMm: 10 }).peripheralShare, 0);
    assert.equal(measureLesions(geometry, lung, lesion.slice(), { peripheralMm: 12 }).peripheralShare, 0.5);
    assert.equal(measureLesions(geometry, lung, lesion.slice(), { peripheralMm: 13 }).peripheralShare, 1);
  });

  it('orders key slices by lesion area', () => {
    const m = new Uint8Array(NX * NY * NZ);
    fillBox(m, 1, [0, 9], [0, 9], [3, 3]); // 100 mm²
    fillBox(m, 1, [0, 19], [0, 9], [7, 7]); // 200
    fillBox(m, 1, [0, 4], [0, 9], [12, 12]); // 50
    fillBox(m, 1, [0, 4], [0, 9], [1, 1]); // 50 (tie: lower index first)
    assert.deepEqual(keySlices(m, geometry, 3), [
      { index: 7, lesionAreaMm2: 200 },
      { index: 3, lesionAreaMm2: 100 },
      { index: 1, lesionAreaMm2: 50 },
    ]);
    assert.deepEqual(keySlices(new Uint8Array(m.length), geometry), []);
  });

  it('restricts lesions to the lungs, or keeps whole the regions that touch a lung', () => {
    const lung = lungs();
    const lesion = new Uint8Array(lung.length);
    const straddling = fillBox(lesion, 1, [54, 59], [15, 18], [6, 9]); // 4 voxels of x outside the left lung
    fillBox(lesion, 1, [28, 30], [36, 38], [0, 1]); // outside, touching nothing
    const strict = lesion.slice();
    restrictToLungs(strict, lung.slice(), geometry, 'lung');
    assert.equal(
      strict.reduce((s, v) => s + v, 0),
      4 * 4 * 4,
    );
    const lungAfter = lung.slice();
    restrictToLungs(lesion, lungAfter, geometry, 'connected');
    assert.equal(
      lesion.reduce((s, v) => s + v, 0),
      straddling,
    );
    assert.equal(lungAfter[idx(59, 16, 7)], LEFT_LUNG, 'the part outside joins the left lung');
    assert.equal(lungAfter[idx(29, 37, 0)], 0);
    // The part outside is capped at maxOutsideMm from the lung (x 58 is 1 mm out, x 59 is 2 mm out).
    const capped = new Uint8Array(lung.length);
    fillBox(capped, 1, [54, 59], [15, 18], [6, 9]);
    restrictToLungs(capped, lung.slice(), geometry, 'connected', 1);
    assert.equal(capped[idx(58, 16, 7)], 1);
    assert.equal(capped[idx(59, 16, 7)], 0);
  });

  it('maps a mask to another grid: the same as resampling the whole zero-bordered mask', () => {
    const lesion = new Uint8Array(NX * NY * NZ);
    fillBox(lesion, 1, [13, 16], [18, 21], [8, 11]);
    fillBox(lesion, 1, [40, 59], [30, 39], [15, 19]); // touches the grid's far corner
    const coarse: Geometry = { size: [43, 29, 13], spacing: [1.4, 1.4, 3.7], origin: [-30.3, -20.2, -0.4], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
    // Reference: the whole mask with an empty border, resampled in one go.
    const padded = new Uint8Array((NX + 2) * (NY + 2) * (NZ + 2));
    for (let z = 0; z < NZ; z++)
      for (let y = 0; y < NY; y++) for (let x = 0; x < NX; x++) padded[x + 1 + (NX + 2) * (y + 1 + (NY + 2) * (z + 1))] = lesion[idx(x, y, z)] as number;
    const pg: Geometry = { ...geometry, size: [NX + 2, NY + 2, NZ + 2], origin: [-31, -21, -2.5] };
    const ref = Uint8Array.from(resample(padded, pg, coarse, 'linear'), (v) => (v >= 0.5 ? 1 : 0));
    for (const slab of [1, 4, 1000]) assert.deepEqual(maskToGrid(lesion, geometry, coarse, slab), ref);
    assert.ok(ref.reduce((s, v) => s + v, 0) > 0);
    assert.deepEqual(maskToGrid(new Uint8Array(lesion.length), geometry, coarse), new Uint8Array(43 * 29 * 13));
  });

  it('maps a mask that touches the border of its grid without smearing it beyond', () => {
    // A 4×4×4 box full of mask placed in the middle of a larger grid: only its own extent lights up.
    const box: Geometry = { size: [4, 4, 4], spacing: [1, 1, 1], origin: [10, 10, 10], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
    const big: Geometry = { size: [30, 30, 30], spacing: [1, 1, 1], origin: [0, 0, 0], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
    const out = maskToGrid(new Uint8Array(64).fill(1), box, big);
    assert.equal(
      out.reduce((s, v) => s + v, 0),
      64,
    );
    assert.equal(out[10 + 30 * (10 + 30 * 10)], 1);
    assert.equal(out[9 + 30 * (10 + 30 * 10)], 0);
  });
});

describe('result category (what the models saw)', () => {
  const at = (probability: number | null, lesionVolumeMl: number | null, minOpacityMl = 0.5) =>
    categorize({ probability, threshold: 0.695, lesionVolumeMl, minOpacityMl });

  it('calls a study COVID-19-like only with lesion of size and the classifier at or above its threshold', () => {
    assert.equal(at(0.695, 0.5), 'covid-19-like');
    assert.equal(at(0.99, 121.2), 'covid-19-like');
    assert.equal(verdictOf('covid-19-like'), 'positive');
  });

  it('calls lesion the classifier does not call COVID-19-like "other opacity", a negative', () => {
    // covid-ct-md normal002 as the 0.2 models see it: p 0.022 with 24.6 mL of lesion.
    assert.equal(at(0.022, 24.6), 'other-opacity');
    assert.equal(at(0.6949, 54.2), 'other-opacity');
    assert.equal(verdictOf('other-opacity'), 'negative');
  });

  it('calls lesion volume under the floor "no significant opacity", whatever the classifier says', () => {
    assert.equal(at(0.1, 0), 'no-significant-opacity');
    assert.equal(at(0.99, 0.49), 'no-significant-opacity');
    assert.equal(at(0.99, 24.6, 30), 'no-significant-opacity');
    assert.equal(verdictOf('no-significant-opacity'), 'negative');
    assert.equal(DEFAULT_MIN_OPACITY_ML, 0.5);
  });

  it('is not assessable without a probability or measurements', () => {
    assert.equal(at(null, null), 'not-assessable');
    assert.equal(at(0.9, null), 'not-assessable');
    assert.equal(at(Number.NaN, 3), 'not-assessable');
    assert.equal(verdictOf('not-assessable'), 'not-assessable');
  });
});
