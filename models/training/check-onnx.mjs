// Runs models/*.onnx with onnxruntime-node on the parity fixtures and compares with PyTorch's outputs.
//   node models/training/check-onnx.mjs [modelsDir]
// Exits 1 when the largest absolute difference exceeds 1e-4.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';

const dir = process.argv.slice(2).find((a) => !a.startsWith('--')) ?? new URL('..', import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const parity = JSON.parse(readFileSync(join(dir, 'parity', 'parity.json'), 'utf8'));
const f32 = (name) => {
  const b = readFileSync(join(dir, 'parity', name));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
let worst = 0;
for (const [key, modelName, inName, outName] of [
  ['lesion', 'lesion-unetpp', 'ct', 'lesion_prob'],
  ['classifier', 'covid-resnet', 'ct_mask', 'prob'],
]) {
  const m = manifest.models.find((x) => x.name === modelName);
  const file = join(dir, m.file);
  const sha = createHash('sha256').update(readFileSync(file)).digest('hex');
  if (sha !== m.sha256) throw new Error(`${m.file}: sha256 ${sha} ≠ manifest ${m.sha256}`);
  const p = parity[key];
  const session = await ort.InferenceSession.create(file);
  const t0 = performance.now();
  const out = await session.run({ [inName]: new ort.Tensor('float32', f32(p.input), p.inputShape) });
  const ms = performance.now() - t0;
  const got = out[outName];
  const want = f32(p.expected);
  if (JSON.stringify(got.dims) !== JSON.stringify(p.expectedShape)) throw new Error(`${key}: dims ${got.dims} ≠ ${p.expectedShape}`);
  let maxDiff = 0;
  for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got.data[i] - want[i]));
  worst = Math.max(worst, maxDiff);
  console.log(`${m.file}: sha256 ok, output ${outName} [${got.dims}], max |onnx − torch| = ${maxDiff.toExponential(2)}, ${ms.toFixed(0)} ms`);
}
if (process.argv.includes('--bench')) {
  const m = manifest.models.find((x) => x.name === 'lesion-unetpp');
  const session = await ort.InferenceSession.create(join(dir, m.file));
  const [D, H, W] = [32, 96, 96];
  const x = new Float32Array(D * H * W).fill(0.12);
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    await session.run({ ct: new ort.Tensor('float32', x, [1, 1, D, H, W]) });
    console.log(`lesion patch ${D}x${H}x${W}: ${(performance.now() - t0).toFixed(0)} ms`);
  }
}
if (worst > 1e-4) {
  console.error(`parity FAILED: ${worst}`);
  process.exit(1);
}
console.log('parity ok');
