/**
 * Resampling a 512×512×300 CT (0.7 × 0.7 × 1 mm) to the models' 1 × 1 × 2.5 mm grid, with windowing, beside a
 * plain memory copy of the same volume measured in the same run. Goal (issue 3): ≤ 1 s on one core.
 * Run: node --import tsx bench/resample.ts [--repeat 5]
 */
import { parseArgs } from 'node:util';
import { preprocess } from '../src/imaging/preprocess.js';
import { resample, resampledGeometry } from '../src/imaging/resample.js';
import type { HuVolume } from '../src/imaging/volume.js';

const { values } = parseArgs({ options: { repeat: { type: 'string', default: '5' } } });
const repeat = Number(values.repeat);

const size: [number, number, number] = [512, 512, 300];
const volume: HuVolume = {
  geometry: { size, spacing: [0.7, 0.7, 1], origin: [-179, -179, -150], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] },
  data: new Int16Array(size[0] * size[1] * size[2]),
};
for (let i = 0; i < volume.data.length; i++) volume.data[i] = ((i * 2654435761) >>> 20) - 1024;
const mb = volume.data.byteLength / 2 ** 20;

function time(fn: () => void): number[] {
  fn();
  const out: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const t = performance.now();
    fn();
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b);
}
const median = (xs: number[]) => xs[Math.floor(xs.length / 2)] as number;

const copy = time(() => {
  const c = new Int16Array(volume.data.length);
  c.set(volume.data);
});
const target = resampledGeometry(volume.geometry, [1, 1, 2.5]);
const resampleOnly = time(() => {
  resample(volume.data, volume.geometry, target, 'linear');
});
const full = time(() => {
  preprocess(volume, { spacing: [1, 1, 2.5], window: [-1024, 350] });
});

console.log(`volume ${size.join('×')} int16 (${mb.toFixed(0)} MiB) → ${target.size.join('×')} float32, one thread, median of ${repeat}`);
console.log(`  baseline memory copy          ${median(copy).toFixed(1).padStart(8)} ms`);
console.log(
  `  resample (separable trilinear) ${median(resampleOnly).toFixed(1).padStart(7)} ms  (${(median(resampleOnly) / median(copy)).toFixed(1)}× the copy)`,
);
console.log(`  resample + window [-1024,350]  ${median(full).toFixed(1).padStart(7)} ms  goal ≤ 1000 ms: ${median(full) <= 1000 ? 'PASS' : 'MISS'}`);
