import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyWindow, preprocess, toOriginalGrid } from '../../src/imaging/preprocess.js';
import { resample, resampledGeometry } from '../../src/imaging/resample.js';
import { allocateVolume, fillSlice, planVolume, type SliceMeta } from '../../src/imaging/slices.js';
import { type Geometry, type HuVolume, patientToVoxel, voxelToPatient } from '../../src/imaging/volume.js';

const axial: Geometry['direction'] = [1, 0, 0, 0, 1, 0, 0, 0, 1];

function slice(z: number, over: Partial<SliceMeta> = {}): SliceMeta {
  return {
    sopInstanceUid: `1.2.3.${z}`,
    seriesInstanceUid: '1.2.3',
    position: [-100, -120, z],
    orientation: [1, 0, 0, 0, 1, 0],
    pixelSpacing: [0.8, 0.7],
    rows: 4,
    columns: 3,
    bitsAllocated: 16,
    pixelRepresentation: 0,
    samplesPerPixel: 1,
    rescaleSlope: 1,
    rescaleIntercept: -1024,
    ...over,
  };
}

describe('volume planning', () => {
  it('orders slices by position along the normal, not by InstanceNumber', () => {
    const slices = [slice(5, { instanceNumber: 1 }), slice(-5, { instanceNumber: 2 }), slice(0, { instanceNumber: 3 })];
    const plan = planVolume(slices);
    assert.deepEqual(plan.order, [1, 2, 0]);
    assert.deepEqual(plan.geometry.size, [3, 4, 3]);
    assert.deepEqual(plan.geometry.spacing, [0.7, 0.8, 5]);
    assert.deepEqual(plan.geometry.origin, [-100, -120, -5]);
  });

  it('orders a feet-first series whose normal points down', () => {
    // Row ⟂ column with normal −z: positions decreasing in z are increasing along the normal.
    const o: SliceMeta['orientation'] = [1, 0, 0, 0, -1, 0];
    const plan = planVolume([slice(0, { orientation: o }), slice(-2, { orientation: o }), slice(-4, { orientation: o })]);
    assert.deepEqual(plan.order, [0, 1, 2]);
    assert.deepEqual(plan.geometry.direction.slice(6), [0, 0, -1]);
  });

  it('names what makes a series unusable', () => {
    assert.throws(() => planVolume([slice(0), slice(2.5), slice(7.5), slice(10)]), /missing slices: 1 after slice 2/);
    assert.throws(() => planVolume([slice(0), slice(0, { sopInstanceUid: 'x' })]), /duplicate slice position/);
    assert.throws(() => planVolume([slice(0), slice(1, { seriesInstanceUid: '9' })]), /mixed series/);
    assert.throws(() => planVolume([slice(0), slice(1, { rows: 5 })]), /differ in size/);
    assert.throws(() => planVolume([slice(0), slice(1, { orientation: [0, 1, 0, 0, 0, -1] })]), /orientation/);
    assert.throws(() => planVolume([slice(0, { position: [0, 0, 0] }), slice(1, { position: [0, 0.5, 1] }), slice(2, { position: [0, 1, 2] })]), /gantry tilt/);
    assert.throws(() => planVolume([slice(0), slice(1), slice(2.3), slice(3.3)]), /not uniform/);
    assert.throws(() => planVolume([]), /no slices/);
  });

  it('converts stored values to HU with slope and intercept, signed, unsigned and big endian', () => {
    const meta = slice(0, { rows: 1, columns: 3 });
    const vol = allocateVolume({ size: [3, 1, 2], spacing: [1, 1, 1], origin: [0, 0, 0], direction: axial });
    const le = Buffer.alloc(6);
    for (const [i, v] of [0, 1024, 3000].entries()) le.writeUInt16LE(v, i * 2);
    fillSlice(vol, 0, le, meta);
    assert.deepEqual([...vol.data.subarray(0, 3)], [-1024, 0, 1976]);
    const be = Buffer.alloc(6);
    for (const [i, v] of [-1000, 0, 40].entries()) be.writeInt16BE(v, i * 2);
    fillSlice(vol, 1, be, { ...meta, pixelRepresentation: 1, rescaleIntercept: 0, rescaleSlope: 0.5 }, true);
    assert.deepEqual([...vol.data.subarray(3, 6)], [-500, 0, 20]);
  });
});

/** A volume with f(p) = linear function of patient position, for exact trilinear checks. */
function rampVolume(g: Geometry, f: (p: [number, number, number]) => number): Float32Array {
  const [nx, ny, nz] = g.size;
  const out = new Float32Array(nx * ny * nz);
  for (let k = 0; k < nz; k++) for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) out[i + nx * (j + ny * k)] = f(voxelToPatient(g, i, j, k));
  return out;
}

describe('resampling', () => {
  const g: Geometry = { size: [60, 50, 40], spacing: [0.7, 0.7, 1], origin: [-21.3, 14.2, -87.5], direction: axial };

  it('covers the same extent at the target spacing', () => {
    const t = resampledGeometry(g, [1, 1, 2.5]);
    assert.deepEqual(t.size, [42, 35, 16]);
    assert.deepEqual(t.origin, g.origin);
  });

  it('reproduces a linear function exactly (trilinear is exact for linear fields)', () => {
    const f = (p: [number, number, number]) => 2 * p[0] - 3 * p[1] + 0.5 * p[2] + 7;
    const t = resampledGeometry(g, [1, 1, 2.5]);
    const out = resample(rampVolume(g, f), g, t);
    const expect = rampVolume(t, f);
    let worst = 0;
    for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs((out[i] as number) - (expect[i] as number)));
    assert.ok(worst < 1e-3, `max error ${worst}`);
  });

  it('keeps a sphere at its mm position and volume (phantom with a known sphere)', () => {
    const center: [number, number, number] = [0.4, 30.1, -70.2];
    const radius = 8;
    const vol: HuVolume = allocateVolume(g);
    vol.data.fill(-1000);
    const [nx, ny, nz] = g.size;
    for (let k = 0; k < nz; k++)
      for (let j = 0; j < ny; j++)
        for (let i = 0; i < nx; i++) {
          const p = voxelToPatient(g, i, j, k);
          if (Math.hypot(p[0] - center[0], p[1] - center[1], p[2] - center[2]) <= radius) vol.data[i + nx * (j + ny * k)] = 1000;
        }
    const input = preprocess(vol, { spacing: [1, 1, 2.5], window: [-1024, 350] });
    const t = input.geometry;
    let n = 0;
    const c = [0, 0, 0];
    for (let k = 0; k < t.size[2]; k++)
      for (let j = 0; j < t.size[1]; j++)
        for (let i = 0; i < t.size[0]; i++) {
          if ((input.data[i + t.size[0] * (j + t.size[1] * k)] as number) < 0.5) continue;
          const p = voxelToPatient(t, i, j, k);
          n++;
          for (let a = 0; a < 3; a++) (c[a] as number) += p[a] as number;
        }
    const centroid = c.map((v) => v / n);
    for (let a = 0; a < 3; a++) assert.ok(Math.abs((centroid[a] as number) - (center[a] as number)) < 0.6, `axis ${a}: ${centroid[a]} vs ${center[a]}`);
    const volumeMm3 = n * 1 * 1 * 2.5;
    const truth = (4 / 3) * Math.PI * radius ** 3;
    assert.ok(Math.abs(volumeMm3 / truth - 1) < 0.08, `volume ${volumeMm3} vs ${truth}`);
    const [ci, cj, ck] = patientToVoxel(t, center).map(Math.round) as [number, number, number];
    assert.equal(input.data[ci + t.size[0] * (cj + t.size[1] * ck)], 1, 'centre is inside the window max');
  });

  it('maps a model-grid mask back onto the original slices (inverse mapping)', () => {
    const t = resampledGeometry(g, [1, 1, 2.5]);
    const mask = new Uint8Array(t.size[0] * t.size[1] * t.size[2]);
    const [bi, bj, bk] = [10, 12, 6];
    mask[bi + t.size[0] * (bj + t.size[1] * bk)] = 1;
    const back = toOriginalGrid(mask, t, g, 'nearest');
    const hits: [number, number, number][] = [];
    for (let k = 0; k < g.size[2]; k++)
      for (let j = 0; j < g.size[1]; j++)
        for (let i = 0; i < g.size[0]; i++) if ((back[i + g.size[0] * (j + g.size[1] * k)] as number) > 0) hits.push(voxelToPatient(g, i, j, k));
    assert.ok(hits.length > 0);
    const target = voxelToPatient(t, bi, bj, bk);
    for (const p of hits) for (let a = 0; a < 3; a++) assert.ok(Math.abs((p[a] as number) - (target[a] as number)) <= (t.spacing[a] as number) / 2 + 1e-6);
  });

  it('windows to [0, 1] with clipping', () => {
    assert.deepEqual(
      [...applyWindow(new Float32Array([-2000, -1024, -337, 350, 900]), [-1024, 350])].map((v) => Math.round(v * 1000) / 1000),
      [0, 0, 0.5, 1, 1],
    );
    assert.throws(() => applyWindow(new Float32Array(1), [1, 1]), /empty/);
  });
});
