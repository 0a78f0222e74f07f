import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_LUNG_ENTRY, loadManifest, ManifestError, parseManifest } from '../../src/inference/manifest.js';
import { identityLesionOnnx, meanClassifierOnnx } from '../../src/inference/testing.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const lesionBytes = identityLesionOnnx();
const classifierBytes = meanClassifierOnnx([1, 2, 32, 96, 96]);

function manifestDoc(): Record<string, unknown> & { models: Record<string, unknown>[] } {
  return {
    schemaVersion: 1,
    models: [
      {
        name: 'lesion-unetpp',
        version: '0.1.0',
        task: 'lesion-segmentation',
        file: 'lesion.onnx',
        sha256: sha(lesionBytes),
        input: {
          name: 'ct',
          shape: [1, 1, 'D', 'H', 'W'],
          dtype: 'float32',
          layout: 'NCDHW',
          spacing: [1, 1, 2.5],
          window: [-1024, 350],
          patch: [32, 96, 96],
          overlap: [8, 16, 16],
          multipleOf: 8,
        },
        outputs: [{ name: 'lesion_prob', meaning: 'per-voxel lesion probability' }],
        threshold: 0.5,
        training: { data: 'synthetic' },
        metrics: { dice: 0.8 },
        intendedUse: 'research',
      },
      {
        name: 'covid-resnet',
        version: '0.1.0',
        task: 'classification',
        file: 'classifier.onnx',
        sha256: sha(classifierBytes),
        input: {
          name: 'ct_mask',
          shape: [1, 2, 32, 96, 96],
          dtype: 'float32',
          layout: 'NCDHW',
          spacing: [1, 1, 2.5],
          window: [-1024, 350],
          channels: ['ct', 'lesion_mask'],
        },
        outputs: [{ name: 'prob', meaning: 'P(COVID-19-like)' }],
        threshold: 0.5,
      },
      { name: 'lung-threshold', version: '1', task: 'lung-segmentation', method: 'classical', input: { spacing: [1, 1, 2.5], window: [-150, 350] } },
    ],
  };
}

const problems = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ManifestError, `expected ManifestError, got ${String(e)}`);
    return e.problems;
  }
  assert.fail('no error thrown');
};

describe('model manifest', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ctgate-manifest-'));
    await writeFile(join(dir, 'lesion.onnx'), lesionBytes);
    await writeFile(join(dir, 'classifier.onnx'), classifierBytes);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (doc: unknown, name = 'manifest.json') => {
    const file = join(dir, name);
    await writeFile(file, JSON.stringify(doc));
    return file;
  };

  it('loads a valid manifest: entries by task, files resolved beside it, hashes checked', async () => {
    const m = await loadManifest(await write(manifestDoc()));
    assert.equal(m.lesion.path, join(dir, 'lesion.onnx'));
    assert.equal(m.classifier.path, join(dir, 'classifier.onnx'));
    assert.deepEqual(m.lesion.input.patch, [32, 96, 96]);
    assert.deepEqual(m.classifier.input.channels, ['ct', 'lesion_mask']);
    assert.equal(m.lung.name, 'lung-threshold');
    assert.deepEqual(m.modelIds, ['lung-threshold@1', 'lesion-unetpp@0.1.0', 'covid-resnet@0.1.0']);
    assert.deepEqual(m.warnings, []);
  });

  it('warns about a model marked as untrained', () => {
    const doc = manifestDoc();
    (doc.models[1] as Record<string, unknown>).training = { note: 'PLACEHOLDER: untrained weights' };
    assert.deepEqual(parseManifest(doc).warnings, ['covid-resnet@0.1.0 is marked as not trained: PLACEHOLDER: untrained weights']);
  });

  it('uses the built-in lung step when the manifest has none', () => {
    const doc = manifestDoc();
    doc.models = doc.models.slice(0, 2);
    assert.deepEqual(parseManifest(doc).lung, DEFAULT_LUNG_ENTRY);
  });

  it('refuses a model file whose sha256 differs, naming the file and both hashes', async () => {
    const doc = manifestDoc();
    const wrong = 'ab'.repeat(32);
    (doc.models[1] as Record<string, unknown>).sha256 = wrong;
    await assert.rejects(loadManifest(await write(doc, 'bad-sha.json')), (e: unknown) => {
      assert.ok(e instanceof ManifestError);
      assert.equal(e.problems.length, 1);
      const p = e.problems[0] as string;
      assert.match(p, /classifier\.onnx/);
      assert.ok(p.includes(wrong), p);
      assert.ok(p.includes(sha(classifierBytes)), p);
      return true;
    });
  });

  it('names a missing model file', async () => {
    const doc = manifestDoc();
    (doc.models[0] as Record<string, unknown>).file = 'nowhere.onnx';
    await assert.rejects(loadManifest(await write(doc, 'missing-file.json')), /nowhere\.onnx/);
  });

  it('names the path of a missing or malformed field', () => {
    const doc = manifestDoc();
    delete (doc.models[0] as Record<string, unknown>).threshold;
    (doc.models[1] as { input: Record<string, unknown> }).input.window = [350, -1024];
    (doc.models[1] as Record<string, unknown>).sha256 = 'not-a-hash';
    const p = problems(() => parseManifest(doc, 'm.json'));
    assert.ok(
      p.some((x) => x.startsWith('models.0.threshold:')),
      p.join('\n'),
    );
    assert.ok(
      p.some((x) => x.startsWith('models.1.input.window:')),
      p.join('\n'),
    );
    assert.ok(
      p.some((x) => x.startsWith('models.1.sha256:') && /64 hexadecimal/.test(x)),
      p.join('\n'),
    );
  });

  it('checks the tiling parameters and the channel count', () => {
    const doc = manifestDoc();
    const lesionInput = (doc.models[0] as { input: Record<string, unknown> }).input;
    lesionInput.patch = [30, 96, 96];
    lesionInput.overlap = [8, 96, 16];
    (doc.models[1] as { input: Record<string, unknown> }).input.channels = ['ct'];
    const p = problems(() => parseManifest(doc));
    assert.ok(
      p.some((x) => x.startsWith('models.0.input.patch.0:') && /multiple/.test(x)),
      p.join('\n'),
    );
    assert.ok(
      p.some((x) => x.startsWith('models.0.input.overlap.1:')),
      p.join('\n'),
    );
    assert.ok(
      p.some((x) => x.startsWith('models.1.input.channels:')),
      p.join('\n'),
    );
  });

  it('needs exactly one lesion and one classification model, and schemaVersion 1', () => {
    const doc = manifestDoc();
    doc.models = [doc.models[0] as Record<string, unknown>];
    doc.schemaVersion = 2;
    const p = problems(() => parseManifest(doc));
    assert.ok(
      p.some((x) => x.startsWith('schemaVersion:')),
      p.join('\n'),
    );
    const doc2 = manifestDoc();
    doc2.models = [doc2.models[0] as Record<string, unknown>];
    assert.ok(problems(() => parseManifest(doc2)).some((x) => /exactly one classification/.test(x)));
  });

  it('reports unreadable and non-JSON manifests as ManifestError', async () => {
    await assert.rejects(loadManifest(join(dir, 'absent.json')), (e: unknown) => e instanceof ManifestError && /cannot read/.test(e.message));
    const file = join(dir, 'broken.json');
    await writeFile(file, '{ not json');
    await assert.rejects(loadManifest(file), (e: unknown) => e instanceof ManifestError && /not valid JSON/.test(e.message));
  });
});
