import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type * as ort from 'onnxruntime-node';
import { loadManifest, parseManifest } from '../../src/inference/manifest.js';
import { runPipeline } from '../../src/inference/pipeline.js';
import { createOnnxModels, openSession, parseExecutionProviders, SessionCache, type SessionFactory } from '../../src/inference/session.js';
import { identityLesionOnnx } from '../../src/inference/testing.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { unlessPresent } from '../helpers/requires.js';
import { standInModelSet } from '../helpers/stand-in-models.js';

describe('ONNX Runtime sessions', () => {
  it('falls back to CPU when CUDA cannot be used, and says why', async () => {
    // This machine's onnxruntime-node has no CUDA provider: the real library throws, as on a GPU host without CUDA.
    const s = await openSession(identityLesionOnnx(), { executionProviders: ['cuda', 'cpu'] });
    assert.equal(s.provider, 'cpu');
    assert.match(s.fallbackReason as string, /^cuda unavailable: /);
    await s.session.release();
    await assert.rejects(openSession(identityLesionOnnx(), { executionProviders: ['cuda'] }));
  });

  it('runs a model on the CPU provider', async () => {
    const s = await openSession(identityLesionOnnx(), { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    assert.equal(s.provider, 'cpu');
    assert.equal(s.fallbackReason, undefined);
    const { Tensor } = await import('onnxruntime-node');
    const out = await s.session.run({ ct: new Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), [1, 1, 2, 2, 2]) });
    const prob = out.lesion_prob;
    assert.ok(prob);
    assert.deepEqual([...(prob.data as Float32Array)], [1, 2, 3, 4, 5, 6, 7, 8]);
    await s.session.release();
  });

  it('records CUDA when the CUDA session opens, and retries with CPU only after a failure (injected factory)', async () => {
    const calls: string[][] = [];
    const fake = { release: async () => {} } as unknown as ort.InferenceSession;
    const works: SessionFactory = async (_m, o) => {
      calls.push([...(o.executionProviders as string[])]);
      return fake;
    };
    assert.equal((await openSession('m.onnx', {}, works)).provider, 'cuda');
    assert.deepEqual(calls, [['cuda', 'cpu']]);
    calls.length = 0;
    const noCuda: SessionFactory = async (_m, o) => {
      calls.push([...(o.executionProviders as string[])]);
      if ((o.executionProviders as string[]).includes('cuda')) throw new Error('libcudart.so.12: cannot open shared object file');
      return fake;
    };
    const s = await openSession('m.onnx', { executionProviders: ['cuda', 'cpu'], intraOpNumThreads: 2 }, noCuda);
    assert.equal(s.provider, 'cpu');
    assert.match(s.fallbackReason as string, /libcudart/);
    assert.deepEqual(calls, [['cuda', 'cpu'], ['cpu']]);
  });

  it('opens each model once and shares the session', async () => {
    let opened = 0;
    const fake = { release: async () => {} } as unknown as ort.InferenceSession;
    const cache = new SessionCache(async () => {
      opened++;
      return fake;
    });
    const [a, b] = await Promise.all([cache.get('x.onnx', { executionProviders: ['cpu'] }), cache.get('x.onnx', { executionProviders: ['cpu'] })]);
    await cache.get('x.onnx', { executionProviders: ['cpu'] });
    assert.equal(a, b);
    assert.equal(opened, 1);
    await cache.get('x.onnx', { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    assert.equal(opened, 2);
    await cache.release();
    assert.equal(cache.size, 0);
  });

  it('parses provider lists', () => {
    assert.deepEqual(parseExecutionProviders('CUDA, cpu'), ['cuda', 'cpu']);
    assert.throws(() => parseExecutionProviders('tpu'), /unknown execution provider "tpu"/);
  });

  it('runs the pipeline end to end on ONNX stand-ins made from a manifest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ctgate-onnx-'));
    try {
      const manifest = parseManifest(
        await standInModelSet(dir, { version: 't', classifierThreshold: 0.5, channels: ['ct: CT', 'lesion: mask'] }),
        join(dir, 'manifest.json'),
      );
      const cache = new SessionCache();
      const models = await createOnnxModels(manifest, { executionProviders: ['cpu'], intraOpNumThreads: 1 }, cache);
      assert.equal(models.executionProvider, 'cpu');
      const p = generateChestCt({ seed: 3, kind: 'covid', size: [96, 96, 40], spacing: [3.7, 3.7, 8] });
      const r = await runPipeline(p.volume, models);
      assert.ok(r.verdict === 'positive' || r.verdict === 'negative');
      assert.ok(r.probability !== null && r.probability > 0 && r.probability < 1);
      assert.deepEqual(r.models, ['lung-threshold@t', 'identity@t', 'mean@t']);
      assert.equal(cache.size, 2);
      await cache.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// Parity of the trained models: onnxruntime-node on the fixtures the exporter wrote, against PyTorch's outputs.
const MODELS = 'models';
const haveModels = existsSync(join(MODELS, 'manifest.json')) && existsSync(join(MODELS, 'parity', 'parity.json'));

describe('trained model parity (models/)', { skip: unlessPresent(haveModels ? false : 'models/manifest.json or models/parity/ not present') }, () => {
  const f32 = (name: string) => {
    const b = readFileSync(join(MODELS, 'parity', name));
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };

  it('loads the manifest (hashes checked) and matches PyTorch within 1e-4 on both models', async () => {
    const manifest = await loadManifest(join(MODELS, 'manifest.json'));
    const parity = JSON.parse(readFileSync(join(MODELS, 'parity', 'parity.json'), 'utf8')) as Record<
      string,
      { input: string; inputShape: number[]; expected: string; expectedShape: number[] }
    >;
    const cache = new SessionCache();
    try {
      for (const [key, entry] of [
        ['lesion', manifest.lesion],
        ['classifier', manifest.classifier],
      ] as const) {
        const p = parity[key];
        assert.ok(p, `parity.json has no ${key} entry`);
        const { session } = await cache.get(entry.path, { executionProviders: ['cpu'] });
        const { Tensor } = await import('onnxruntime-node');
        const inputName = entry.input.name;
        const outputName = entry.outputs[0]?.name as string;
        const out = await session.run({ [inputName]: new Tensor('float32', f32(p.input), p.inputShape) });
        const got = out[outputName];
        assert.ok(got, `${key}: no ${outputName} output`);
        assert.deepEqual([...got.dims], p.expectedShape);
        const want = f32(p.expected);
        const data = got.data as Float32Array;
        assert.equal(data.length, want.length);
        let maxDiff = 0;
        for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs((data[i] as number) - (want[i] as number)));
        assert.ok(maxDiff <= 1e-4, `${key}: max |onnx − torch| = ${maxDiff}`);
      }
    } finally {
      await cache.release();
    }
  });
});
