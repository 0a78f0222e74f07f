import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resample, resampledGeometry } from '../../src/imaging/resample.js';
import type { HuVolume } from '../../src/imaging/volume.js';
import { dice, LEFT_LUNG, RIGHT_LUNG, segmentLungs } from '../../src/inference/lungs.js';
import { boundingBox, close2d, fillHoles2d, label3d, squaredDistanceTo } from '../../src/inference/morphology.js';
import { generateChestCt, type PhantomKind, phantomGeometry } from '../../src/synthetic/phantom.js';

describe('morphology', () => {
  it('labels 6- and 26-connected components', () => {
    // Two voxels touching only at a corner, and a separate bar of three.
    const size: [number, number, number] = [4, 3, 2];
    const m = new Uint8Array(24);
    m[0] = 1; // (0,0,0)
    m[1 + 4 + 12] = 1; // (1,1,1)
    m[3] = 1;
    m[3 + 4] = 1;
    m[3 + 8] = 1; // x = 3, y = 0..2, z = 0
    const six = label3d(m, size, 6);
    assert.deepEqual(
      six.sizes.sort((a, b) => a - b),
      [1, 1, 3],
    );
    const all = label3d(m, size, 26);
    assert.deepEqual(
      all.sizes.sort((a, b) => a - b),
      [2, 3],
    );
    assert.equal(all.labels[0], all.labels[1 + 4 + 12]);
  });

  it('fills holes but not bays', () => {
    // 7×7 ring with a hole in the middle, and a C shape open to the border on the right.
    const w = 7;
    const ring = new Uint8Array(w * w);
    for (let y = 1; y < 6; y++) for (let x = 1; x < 6; x++) ring[y * w + x] = x === 3 && y === 3 ? 0 : 1;
    fillHoles2d(ring, w, w);
    assert.equal(ring[3 * w + 3], 1);
    const c = new Uint8Array(w * w);
    for (let y = 1; y < 6; y++) for (let x = 1; x < 7; x++) c[y * w + x] = y > 1 && y < 5 && x > 2 ? 0 : 1;
    const before = c.slice();
    fillHoles2d(c, w, w);
    assert.deepEqual(c, before);
  });

  it('computes exact Euclidean distances with anisotropic spacing', () => {
    const size = [9, 7, 5];
    const spacing = [1, 2, 3];
    const t = new Uint8Array(9 * 7 * 5);
    const targets = [
      [1, 1, 1],
      [7, 5, 3],
      [4, 0, 4],
    ];
    for (const [x, y, z] of targets) t[(x as number) + (y as number) * 9 + (z as number) * 63] = 1;
    const d2 = squaredDistanceTo(t, size, spacing);
    for (let z = 0; z < 5; z++)
      for (let y = 0; y < 7; y++)
        for (let x = 0; x < 9; x++) {
          const brute = Math.min(
            ...targets.map(([a, b, c]) => (((x - (a as number)) * 1) ** 2 + ((y - (b as number)) * 2) ** 2 + ((z - (c as number)) * 3) ** 2) as number),
          );
          assert.equal(d2[x + y * 9 + z * 63], brute);
        }
  });

  it('closes a notch narrower than the disk and keeps the outline elsewhere', () => {
    const w = 40;
    const h = 30;
    const m = new Uint8Array(w * h);
    for (let y = 8; y < 22; y++) for (let x = 8; x < 32; x++) m[y * w + x] = 1;
    // A notch 3 px wide, 5 deep from the top edge.
    for (let y = 8; y < 13; y++) for (let x = 19; x < 22; x++) m[y * w + x] = 0;
    const box = boundingBox(m, [w, h, 1]);
    close2d(m, w, h, 1, 1, 3);
    assert.equal(m[10 * w + 20], 1, 'notch closed');
    assert.deepEqual(boundingBox(m, [w, h, 1]), box, 'no growth beyond the outline');
  });
});

describe('classical lung segmentation on synthetic phantoms', () => {
  const cases: [PhantomKind, number, number][] = [
    ['healthy', 1, 0.97],
    ['covid', 2, 0.97],
    ['nodule', 3, 0.97],
    ['old-lesion', 4, 0.97],
    // A consolidated lobe is soft tissue: a threshold cannot see it (the pipeline adds it back from the lesion model).
    ['lobar-pneumonia', 5, 0.88],
  ];
  for (const [kind, seed, minDice] of cases) {
    it(`${kind}: Dice ≥ ${minDice} against the phantom's lung mask, sides right`, () => {
      const p = generateChestCt({ seed, kind });
      const seg = segmentLungs(p.volume);
      const d = dice(seg.labels, p.lungMask);
      assert.ok(d >= minDice, `Dice ${d.toFixed(4)}`);
      // Right lung is patient x < 0 (LPS) in the phantom.
      const g = p.volume.geometry;
      const nx = g.size[0];
      let wrongSide = 0;
      let both = 0;
      for (let i = 0; i < seg.labels.length; i++) {
        const l = seg.labels[i];
        if (!l || !p.lungMask[i]) continue;
        both++;
        const x = g.origin[0] + (i % nx) * g.spacing[0];
        if ((x > 0 ? LEFT_LUNG : RIGHT_LUNG) !== l) wrongSide++;
      }
      assert.ok(wrongSide / both < 0.001, `${wrongSide} of ${both} voxels on the wrong side`);
      assert.ok(seg.volumesMl.left > 1000 && seg.volumesMl.right > 1000, JSON.stringify(seg.volumesMl));
    });
  }

  it('on a resampled grid and back (nearest), as the pipeline does: Dice ≥ 0.97', () => {
    const p = generateChestCt({ seed: 7, kind: 'covid', size: [96, 96, 48], spacing: [3.5, 3.5, 6] });
    const g = p.volume.geometry;
    const grid = resampledGeometry(g, [2, 2, 4]);
    const seg = segmentLungs({ geometry: grid, data: resample(p.volume.data, g, grid, 'linear') });
    const back = resample(seg.labels, grid, g, 'nearest');
    const mask = Uint8Array.from(back, (v) => (v > 0 ? 1 : 0));
    const d = dice(mask, p.lungMask);
    assert.ok(d >= 0.97, `Dice ${d.toFixed(4)}`);
  });

  it('gives the left/right split from patient coordinates, whatever the voxel axes', () => {
    // Flip the x axis (direction −x), as a NIfTI in RAS read into LPS gives: labels must follow patient x.
    const p = generateChestCt({ seed: 1, kind: 'healthy', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const g = p.volume.geometry;
    const [nx, ny, nz] = g.size;
    const flipped = new Int16Array(p.volume.data.length);
    for (let k = 0; k < nz; k++)
      for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) flipped[i + nx * (j + ny * k)] = p.volume.data[nx - 1 - i + nx * (j + ny * k)] as number;
    const fg = {
      ...g,
      origin: [-g.origin[0], g.origin[1], g.origin[2]] as [number, number, number],
      direction: [-1, 0, 0, 0, 1, 0, 0, 0, 1] as HuVolume['geometry']['direction'],
    };
    const a = segmentLungs(p.volume);
    const b = segmentLungs({ geometry: fg, data: flipped });
    let same = 0;
    let total = 0;
    for (let k = 0; k < nz; k++)
      for (let j = 0; j < ny; j++)
        for (let i = 0; i < nx; i++) {
          const la = a.labels[i + nx * (j + ny * k)];
          if (!la) continue;
          total++;
          if (b.labels[nx - 1 - i + nx * (j + ny * k)] === la) same++;
        }
    assert.ok(total > 0 && same / total > 0.99, `${same}/${total}`);
  });

  it('finds no lungs in a volume of soft tissue, nor in air alone', () => {
    const g = phantomGeometry([64, 64, 20], [5, 5, 5]);
    const soft = segmentLungs({ geometry: g, data: new Int16Array(64 * 64 * 20).fill(40) });
    assert.equal(soft.volumesMl.total, 0);
    assert.equal(soft.split, 'none');
    const air = segmentLungs({ geometry: g, data: new Int16Array(64 * 64 * 20).fill(-1000) });
    assert.equal(air.volumesMl.total, 0);
  });
});
