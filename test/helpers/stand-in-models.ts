/**
 * A model set made of the one-node ONNX stand-ins (src/inference/testing.ts): lesion probability = the windowed CT,
 * classifier = the mean of its input. Written to `dir` with a manifest whose sha256 values match, for tests of the
 * ONNX plumbing that must not depend on the trained models.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../../src/inference/manifest.js';
import { identityLesionOnnx, meanClassifierOnnx } from '../../src/inference/testing.js';

export interface StandInOptions {
  version: string;
  classifierThreshold: number;
  channels?: string[];
}

/** Writes l.onnx and c.onnx to `dir`; returns the manifest document (not written). */
export async function standInModelSet(dir: string, o: StandInOptions): Promise<Record<string, unknown>> {
  await writeFile(join(dir, 'l.onnx'), identityLesionOnnx());
  await writeFile(join(dir, 'c.onnx'), meanClassifierOnnx([1, 2, 16, 48, 48]));
  const spacing = [2.5, 2.5, 5];
  return {
    schemaVersion: 1,
    models: [
      {
        name: 'identity',
        version: o.version,
        task: 'lesion-segmentation',
        file: 'l.onnx',
        sha256: await sha256File(join(dir, 'l.onnx')),
        input: {
          name: 'ct',
          shape: [1, 1, 'D', 'H', 'W'],
          dtype: 'float32',
          layout: 'NCDHW',
          spacing,
          window: [-1024, 350],
          patch: [16, 48, 48],
          overlap: [4, 8, 8],
          multipleOf: 8,
        },
        outputs: [{ name: 'lesion_prob' }],
        threshold: 0.45,
      },
      {
        name: 'mean',
        version: o.version,
        task: 'classification',
        file: 'c.onnx',
        sha256: await sha256File(join(dir, 'c.onnx')),
        input: {
          name: 'ct_mask',
          shape: [1, 2, 16, 48, 48],
          dtype: 'float32',
          layout: 'NCDHW',
          window: [-1024, 350],
          channels: o.channels ?? ['ct', 'lesion'],
        },
        outputs: [{ name: 'prob' }],
        threshold: o.classifierThreshold,
      },
      { name: 'lung-threshold', version: o.version, task: 'lung-segmentation', method: 'classical', input: { spacing } },
    ],
  };
}
