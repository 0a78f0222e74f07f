import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DicomWebClient } from '../../src/dicomweb/client.js';
import { retrieveVolume } from '../../src/dicomweb/retrieve.js';
import { preprocess } from '../../src/imaging/preprocess.js';
import { type Geometry, voxelToPatient } from '../../src/imaging/volume.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { addSphere, generateChestCt, type Vec3 } from '../../src/synthetic/phantom.js';
import { TestOrthanc } from '../helpers/orthanc.js';

/** Centroid (mm) and volume (mL) of the voxels above `threshold` inside a box around `near`. */
function blob(data: Float32Array | Int16Array, g: Geometry, near: Vec3, boxMm: number, threshold: number) {
  const [nx, ny, nz] = g.size;
  let n = 0;
  const c = [0, 0, 0];
  for (let k = 0; k < nz; k++)
    for (let j = 0; j < ny; j++)
      for (let i = 0; i < nx; i++) {
        const p = voxelToPatient(g, i, j, k);
        if (Math.abs(p[0] - near[0]) > boxMm || Math.abs(p[1] - near[1]) > boxMm || Math.abs(p[2] - near[2]) > boxMm) continue;
        if ((data[i + nx * (j + ny * k)] as number) <= threshold) continue;
        n++;
        for (let a = 0; a < 3; a++) (c[a] as number) += p[a] as number;
      }
  return { centroid: c.map((v) => v / n) as Vec3, ml: (n * g.spacing[0] * g.spacing[1] * g.spacing[2]) / 1000 };
}

describe('synthetic phantom through a real PACS: known spheres at known mm positions', () => {
  const pacs = new TestOrthanc();
  let client: DicomWebClient;
  before(async () => {
    await pacs.start();
    client = pacs.client();
  });
  after(async () => {
    await pacs.stop();
  });

  for (const variant of [
    { name: 'thick slices, unsigned storage', size: [96, 96, 40] as Vec3, spacing: [3, 3, 5] as Vec3, pixelRepresentation: 0 as const },
    { name: 'thin slices, signed storage', size: [128, 128, 120] as Vec3, spacing: [2.5, 2.5, 1.25] as Vec3, pixelRepresentation: 1 as const },
  ]) {
    it(`keeps HU and geometry exact, and spheres in place after resampling (${variant.name})`, async () => {
      const phantom = generateChestCt({ seed: 11, kind: 'healthy', size: variant.size, spacing: variant.spacing });
      const spheres: { center: Vec3; radius: number }[] = [
        { center: [-60, 20, -60], radius: 12 },
        { center: [55, -35, -110], radius: 9 },
      ];
      for (const s of spheres) addSphere(phantom.volume, s.center, s.radius, 1500);
      const series = writeCtSeries(phantom.volume, {
        seed: 11,
        pixelRepresentation: variant.pixelRepresentation,
        accessionNumber: `PH-${variant.pixelRepresentation}`,
      });
      // Store in reverse order: the volume must come out ordered by position, not by arrival or InstanceNumber.
      await client.store([...series.files].reverse().map((f) => f.bytes));
      const r = await retrieveVolume(client, series.studyInstanceUid, series.seriesInstanceUid, { concurrency: 4 });

      const g = r.volume.geometry;
      assert.deepEqual(g.size, phantom.volume.geometry.size);
      for (let a = 0; a < 3; a++) {
        assert.ok(Math.abs((g.spacing[a] as number) - (phantom.volume.geometry.spacing[a] as number)) < 1e-3, `spacing ${a}`);
        assert.ok(Math.abs((g.origin[a] as number) - (phantom.volume.geometry.origin[a] as number)) < 1e-3, `origin ${a}`);
      }
      let differ = 0;
      for (let i = 0; i < r.volume.data.length; i++) if (r.volume.data[i] !== phantom.volume.data[i]) differ++;
      assert.equal(differ, 0, 'HU voxel for voxel');

      const input = preprocess(r.volume, { spacing: [1, 1, 2.5], window: [-1024, 350] });
      for (const s of spheres) {
        const found = blob(input.data, input.geometry, s.center, s.radius + 6, 0.99);
        for (let a = 0; a < 3; a++) {
          const tol = Math.max(g.spacing[a] as number, 2.5) / 2;
          assert.ok(Math.abs((found.centroid[a] as number) - (s.center[a] as number)) <= tol, `sphere at ${s.center}: axis ${a} found ${found.centroid[a]}`);
        }
        const truth = ((4 / 3) * Math.PI * s.radius ** 3) / 1000;
        assert.ok(Math.abs(found.ml / truth - 1) < 0.35, `sphere volume ${found.ml.toFixed(2)} mL vs ${truth.toFixed(2)} mL`);
      }
    });
  }
});
