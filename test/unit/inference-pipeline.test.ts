import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HuVolume } from '../../src/imaging/volume.js';
import { dice } from '../../src/inference/lungs.js';
import { type PipelineModels, type Progress, runPipeline } from '../../src/inference/pipeline.js';
import { generateChestCt, maskVolumesMl, phantomGeometry } from '../../src/synthetic/phantom.js';

const WINDOW: [number, number] = [-1024, 350];

/**
 * Stand-in models on a coarse grid (2.5 × 2.5 × 5 mm keeps the tests fast). The "lesion model" marks voxels whose
 * HU lies in a band (lesion-like density: GGO to consolidation); the "classifier" says positive when the
 * lesion channel covers more than 2 % of its input.
 */
function fakeModels(band: [number, number] = [-720, -100]): PipelineModels {
  const [lo, hi] = WINDOW;
  return {
    lung: { id: 'lung-threshold@test', spacing: [2.5, 2.5, 5] },
    lesion: {
      id: 'band@test',
      spacing: [2.5, 2.5, 5],
      window: WINDOW,
      threshold: 0.5,
      tiles: { patch: [16, 48, 48], overlap: [4, 8, 8], multipleOf: 8 },
      run: async (x) => {
        const o = new Float32Array(x.length);
        for (let i = 0; i < x.length; i++) {
          const hu = (x[i] as number) * (hi - lo) + lo;
          o[i] = hu > band[0] && hu < band[1] ? 0.9 : 0.1;
        }
        return o;
      },
    },
    classifier: {
      id: 'share@test',
      window: WINDOW,
      shape: [2, 16, 48, 48],
      channels: ['ct', 'lesion_mask'],
      threshold: 0.5,
      run: async (x, dims) => {
        assert.deepEqual(dims, [2, 16, 48, 48]);
        const per = x.length / 2;
        let s = 0;
        for (let i = per; i < x.length; i++) s += x[i] as number;
        return s / per > 0.02 ? 0.9 : 0.1;
      },
    },
    executionProvider: 'cpu',
  };
}

describe('screening pipeline (stand-in models)', () => {
  it('runs every stage on a covid phantom and measures its lesions', async () => {
    const p = generateChestCt({ seed: 11, kind: 'covid', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const stages: string[] = [];
    const r = await runPipeline(p.volume, fakeModels(), {
      onProgress: (q: Progress) => {
        if (stages[stages.length - 1] !== q.stage) stages.push(q.stage);
      },
    });
    assert.deepEqual(stages, ['check', 'resample', 'lungs', 'lesions', 'classify', 'findings']);
    assert.equal(r.verdict, 'positive');
    assert.equal(r.category, 'covid-19-like');
    assert.equal(r.probability, 0.9);
    assert.deepEqual(r.models, ['lung-threshold@test', 'band@test', 'share@test']);
    assert.equal(r.executionProvider, 'cpu');
    for (const s of ['resample', 'lungs', 'lesions', 'classify', 'findings'] as const) assert.equal(typeof r.timingsMs[s], 'number');
    const f = r.findings;
    assert.ok(f && r.lesionMask);
    assert.equal(r.lesionMask.length, p.volume.data.length);
    const truth = maskVolumesMl(p.lesionMask, p.volume.geometry);
    // The band model also marks partial-volume vessel edges, so volumes are not the truth's; but the mask mapped
    // back to the original slices must hold the volume measured on the model grid, and cover the true lesions.
    const onSlices = maskVolumesMl(r.lesionMask, p.volume.geometry).total;
    assert.ok(Math.abs(onSlices - f.lesionVolumeMl) < 0.3 * f.lesionVolumeMl, `${onSlices} mL on the slices, ${f.lesionVolumeMl} mL measured`);
    let covered = 0;
    let lesionVoxels = 0;
    for (let i = 0; i < p.lesionMask.length; i++)
      if (p.lesionMask[i]) {
        lesionVoxels++;
        if (r.lesionMask[i]) covered++;
      }
    assert.ok(covered / lesionVoxels > 0.5, `${covered} of ${lesionVoxels} true lesion voxels found`);
    assert.ok(Math.abs(f.lungInvolvementPercent.total - (100 * f.lesionVolumeMl) / f.lungVolumeMl.total) < 0.05);
    assert.ok(f.lesionCount >= 1);
    assert.equal(f.bilateral, truth.left > 0 && truth.right > 0);
    assert.ok(f.peripheralShare !== null && f.peripheralShare > 0 && f.peripheralShare <= 1);
    assert.ok(f.lungVolumeMl.total > 2000, JSON.stringify(f.lungVolumeMl));
    assert.ok(f.lungInvolvementPercent.total > 0 && f.lungInvolvementPercent.total < 100);
    assert.ok(f.keySlices.length === 3);
    const nz = p.volume.geometry.size[2];
    for (const k of f.keySlices) assert.ok(k.index >= 0 && k.index < nz && k.lesionAreaMm2 > 0);
    assert.ok((f.keySlices[0]?.lesionAreaMm2 as number) >= (f.keySlices[2]?.lesionAreaMm2 as number));
  });

  it('keeps consolidation the air threshold misses when it is connected to the lung (lesionScope)', async () => {
    const p = generateChestCt({ seed: 5, kind: 'lobar-pneumonia', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const truth = maskVolumesMl(p.lesionMask, p.volume.geometry).total;
    const models = fakeModels([-200, 120]);
    const strict = await runPipeline(p.volume, models, { lesionScope: 'lung' });
    const connected = await runPipeline(p.volume, models);
    const vs = strict.findings?.lesionVolumeMl as number;
    const vc = connected.findings?.lesionVolumeMl as number;
    assert.ok(vc > 2 * vs, `connected ${vc} mL, lung-only ${vs} mL, truth ${truth} mL`);
    assert.ok(dice(connected.lesionMask as Uint8Array, p.lesionMask) > dice(strict.lesionMask as Uint8Array, p.lesionMask));
  });

  it('says negative below the classifier threshold and still returns the findings', async () => {
    const p = generateChestCt({ seed: 12, kind: 'healthy', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const r = await runPipeline(p.volume, fakeModels([-200, -150]));
    assert.equal(r.verdict, 'negative');
    assert.equal(r.probability, 0.1);
    assert.ok(r.findings);
  });

  it('splits a negative by what it saw: other opacity (lesion, classifier below threshold) vs no significant opacity', async () => {
    // A lobar pneumonia: the band model marks its consolidation; a classifier that never calls COVID-19-like.
    const p = generateChestCt({ seed: 5, kind: 'lobar-pneumonia', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const models = fakeModels([-200, 120]);
    const never = { ...models, classifier: { ...models.classifier, run: async () => 0.1 } };
    const other = await runPipeline(p.volume, never);
    assert.ok((other.findings?.lesionVolumeMl as number) >= other.minOpacityMl, `${other.findings?.lesionVolumeMl} mL`);
    assert.equal(other.verdict, 'negative');
    assert.equal(other.category, 'other-opacity');
    // The same study with the manifest's volume floor above its lesion volume: no significant opacity, even when the
    // classifier would call it COVID-19-like (nothing of size for it to have seen).
    const always = { ...models, classifier: { ...models.classifier, run: async () => 0.99, minOpacityMl: 1e6 } };
    const none = await runPipeline(p.volume, always);
    assert.equal(none.minOpacityMl, 1e6);
    assert.equal(none.category, 'no-significant-opacity');
    assert.equal(none.verdict, 'negative');
    assert.equal(none.probability, 0.99);
  });

  it('is not assessable: too few slices, too little coverage, no lungs, lungs too small', async () => {
    const models = fakeModels();
    const few = generateChestCt({ seed: 1, kind: 'covid', size: [64, 64, 5], spacing: [5.6, 5.6, 20] });
    const r1 = await runPipeline(few.volume, models);
    assert.equal(r1.verdict, 'not-assessable');
    assert.equal(r1.category, 'not-assessable');
    assert.match(r1.reason as string, /5 slices/);
    assert.equal(r1.probability, null);
    assert.equal(r1.findings, null);
    assert.equal(r1.lesionMask, null);

    const thin = generateChestCt({ seed: 1, kind: 'covid', size: [64, 64, 20], spacing: [5.6, 5.6, 2] });
    assert.match((await runPipeline(thin.volume, models)).reason as string, /40\.0 mm/);

    const g = phantomGeometry([64, 64, 24], [5, 5, 5]);
    const soft: HuVolume = { geometry: g, data: new Int16Array(64 * 64 * 24).fill(40) };
    const r3 = await runPipeline(soft, models);
    assert.equal(r3.verdict, 'not-assessable');
    assert.match(r3.reason as string, /no lungs/);

    // A body with one small air pocket (≈ 100 mL): not a chest.
    const pocket: HuVolume = { geometry: g, data: new Int16Array(64 * 64 * 24).fill(40) };
    for (let k = 8; k < 16; k++) for (let j = 28; j < 36; j++) for (let i = 28; i < 36; i++) pocket.data[i + 64 * (j + 64 * k)] = -900;
    const r4 = await runPipeline(pocket, models);
    assert.equal(r4.verdict, 'not-assessable');
    assert.match(r4.reason as string, /lung mask too small: \d+ mL/);
  });
});
