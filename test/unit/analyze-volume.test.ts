import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SliceMeta } from '../../src/imaging/slices.js';
import type { Manifest } from '../../src/inference/manifest.js';
import type { PipelineModels } from '../../src/inference/pipeline.js';
import { analyzeVolume } from '../../src/results/analyze-volume.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';

const WINDOW: [number, number] = [-1024, 350];

/** Stand-in models on a coarse grid: lesion = lesion-like HU band, positive when the lesion share exceeds 2 %. */
const models: PipelineModels = {
  lung: { id: 'lung@test', spacing: [2.5, 2.5, 5] },
  lesion: {
    id: 'band@test',
    spacing: [2.5, 2.5, 5],
    window: WINDOW,
    threshold: 0.5,
    tiles: { patch: [16, 48, 48], overlap: [4, 8, 8], multipleOf: 8 },
    run: async (x) =>
      x.map((v) => {
        const hu = v * (WINDOW[1] - WINDOW[0]) + WINDOW[0];
        return hu > -720 && hu < -100 ? 0.9 : 0.1;
      }),
  },
  classifier: {
    id: 'share@test',
    window: WINDOW,
    shape: [2, 16, 48, 48],
    channels: ['ct', 'lesion_mask'],
    threshold: 0.5,
    run: async (x) => {
      const per = x.length / 2;
      let s = 0;
      for (let i = per; i < x.length; i++) s += x[i] as number;
      return s / per > 0.02 ? 0.9 : 0.1;
    },
  },
  executionProvider: 'cpu',
};

const manifest = {
  lung: { name: 'lung', version: '1' },
  lesion: { name: 'band', version: '2' },
  classifier: { name: 'share', version: '3' },
} as unknown as Pick<Manifest, 'lung' | 'lesion' | 'classifier'>;

describe('analyzeVolume (the worker and ctgate analyze share it)', () => {
  it('gives the analysis, the source series and the key images of the slices', async () => {
    const p = generateChestCt({ seed: 11, kind: 'covid', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
    const slices = Array.from({ length: 40 }, (_, k) => ({
      sopInstanceUid: `1.2.3.${k}`,
      seriesInstanceUid: '1.2.3',
      frameOfReferenceUid: '1.2.9',
    })) as SliceMeta[];
    const steps = new Set<string>();
    const out = await analyzeVolume(
      { volume: p.volume, slices, seriesInstanceUid: '1.2.3', seriesNumber: 4, sopClassUid: '1.2.840.10008.5.1.4.1.1.2' },
      models,
      manifest,
      {
        onProgress: (q) => steps.add(q.stage),
      },
    );
    assert.equal(out.analysis.verdict, 'positive');
    assert.deepEqual(
      out.analysis.models.map((m) => `${m.name}@${m.version}`),
      ['lung@1', 'band@2', 'share@3'],
    );
    assert.equal(out.analysis.lesionMask, out.result.lesionMask);
    assert.deepEqual([...steps], ['check', 'resample', 'lungs', 'lesions', 'classify', 'findings']);
    assert.equal(out.series.frameOfReferenceUid, '1.2.9');
    assert.equal(out.series.seriesNumber, 4);
    assert.equal(out.series.geometry, p.volume.geometry);
    assert.equal(out.series.slices, slices);
    const keySlices = out.result.findings?.keySlices ?? [];
    assert.ok(keySlices.length > 0);
    assert.deepEqual(
      out.keyImages.map((k) => [k.sliceIndex, k.sopInstanceUid]),
      keySlices.map((k) => [k.index, `1.2.3.${k.index}`]),
    );
    for (const k of out.keyImages) assert.deepEqual([...k.png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
    assert.ok(out.modelMs > 0 && out.keyImagesMs >= 0);
  });
});
