import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRegistry } from '../../src/inference/model-registry.js';

const tiny = (n = 8 * 16 * 16) => new Float32Array(n).fill(0.2);
const lesionVersion = (doc: { models: { name: string; version: string }[] }) => doc.models.find((m) => m.name === 'lesion-unetpp')?.version;

describe('ModelRegistry: installing a new model set while studies run', () => {
  let dir = '';
  let manifestFile = '';
  let original: { models: { name: string; version: string; task: string; threshold?: number; sha256?: string }[] };

  const install = async (doc: unknown) => {
    const tmp = `${manifestFile}.tmp`;
    await writeFile(tmp, typeof doc === 'string' ? doc : JSON.stringify(doc));
    await rename(tmp, manifestFile);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ctgate-registry-'));
    for (const f of ['lesion-unetpp.onnx', 'covid-resnet.onnx']) await copyFile(join('models', f), join(dir, f));
    original = JSON.parse(await readFile('models/manifest.json', 'utf8'));
    manifestFile = join(dir, 'manifest.json');
    await install(original);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('swaps to a new set between studies, keeps the old one for a study in flight, and survives a broken install', async () => {
    const registry = new ModelRegistry(manifestFile, { executionProviders: ['cpu'], intraOpNumThreads: 1 }, 0);
    const first = await registry.start();
    assert.equal(first.generation, 1);
    const inFlight = await registry.lease();
    assert.ok(inFlight.set.manifest.modelIds.includes(`lesion-unetpp@${lesionVersion(original)}`));

    // A new version with a new threshold (same weights, so the sha256 still matches).
    const next = structuredClone(original);
    for (const m of next.models) {
      if (m.task === 'lesion-segmentation') m.version = '0.2.0';
      if (m.task === 'classification') m.threshold = 0.7;
    }
    await install(next);
    const after = await registry.lease();
    assert.equal(after.set.generation, 2);
    assert.ok(after.set.manifest.modelIds.includes('lesion-unetpp@0.2.0'), after.set.manifest.modelIds.join());
    assert.equal(after.set.models.classifier.threshold, 0.7);
    assert.equal(registry.status().generation, 2);

    // The study that leased generation 1 still runs on it.
    const out = await inFlight.set.models.lesion.run(tiny(), [8, 16, 16]);
    assert.equal(out.length, 8 * 16 * 16);
    inFlight.release();
    inFlight.release(); // idempotent

    // A broken install: the sha256 does not match. The running set stays; the error is visible.
    const broken = structuredClone(next);
    for (const m of broken.models) if (m.task === 'classification') m.sha256 = '0'.repeat(64);
    await install(broken);
    const still = await registry.lease();
    assert.equal(still.set.generation, 2);
    assert.match(registry.status().lastError?.message ?? '', /sha256/);
    const out2 = await still.set.models.lesion.run(tiny(), [8, 16, 16]);
    assert.equal(out2.length, 8 * 16 * 16);

    // Not JSON at all: same.
    await install('{ not json');
    const again = await registry.lease();
    assert.equal(again.set.generation, 2);
    assert.ok(registry.status().lastError);

    // Fixed: picked up, and the error is cleared.
    await install(original);
    const fixed = await registry.lease();
    assert.equal(fixed.set.generation, 3);
    assert.ok(fixed.set.manifest.modelIds.includes(`lesion-unetpp@${lesionVersion(original)}`));
    assert.equal(registry.status().lastError, undefined);
    for (const l of [after, still, again, fixed]) l.release();
    await registry.close();
  });

  it('refuses to start without a valid model set', async () => {
    const registry = new ModelRegistry(join(dir, 'missing.json'));
    await assert.rejects(registry.start(), /ENOENT|cannot read/);
  });
});
