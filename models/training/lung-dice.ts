/**
 * Lung Dice of the classical lung segmentation (src/inference/lungs.ts) against TotalSegmentator's lobe labels on
 * its real CT, on the CT's own 3 mm grid and on the pipeline's (1, 1, 2.5) mm grid, for the model card.
 * Prints one JSON object: { rows: [...], markdown }.
 *   node --import tsx models/training/lung-dice.ts
 */
import { join } from 'node:path';
import { readNifti } from '../../src/imaging/nifti.js';
import { resample, resampledGeometry } from '../../src/imaging/resample.js';
import { dice, LEFT_LUNG, RIGHT_LUNG, segmentLungs } from '../../src/inference/lungs.js';

const dir = new URL('../../../shared/data/totalseg-ct-small', import.meta.url).pathname;
const ct = readNifti(join(dir, 'example_ct_sm.nii.gz'));
const ref = readNifti(join(dir, 'example_seg.nii.gz'));
const left = Uint8Array.from(ref.data, (l) => (l === 10 || l === 11 ? 1 : 0));
const right = Uint8Array.from(ref.data, (l) => (l >= 12 && l <= 14 ? 1 : 0));
const side = (labels: Uint8Array, s: number) => Uint8Array.from(labels, (l) => (l === s ? 1 : 0));

const own = segmentLungs({ geometry: ct.geometry, data: ct.data as Int16Array }).labels;
const grid = resampledGeometry(ct.geometry, [1, 1, 2.5]);
const onGrid = segmentLungs({ geometry: grid, data: resample(ct.data, ct.geometry, grid, 'linear') }).labels;
const back = Uint8Array.from(resample(onGrid, grid, ct.geometry, 'nearest'));
const rows = [
  { grid: "the CT's own 3 mm grid", labels: own },
  { grid: 'the pipeline grid (1 × 1 × 2.5 mm), mapped back', labels: back },
].map(({ grid, labels }) => ({
  grid,
  left: dice(side(labels, LEFT_LUNG), left),
  right: dice(side(labels, RIGHT_LUNG), right),
}));
const f = (v: number) => v.toFixed(3);
const markdown = [
  "Classical method (`src/inference/lungs.ts`) against TotalSegmentator's lobe labels (left = 10 + 11, right = 12 + 13 + 14) on",
  'its real CT of the lung bases and upper abdomen (`totalseg-ct-small`, 30 slices at 3 mm); bowel and stomach gas are',
  'rejected by the pure-air rule. Measured by `models/training/lung-dice.ts` (the same bounds are asserted in',
  '`test/unit/inference-lungs.test.ts`). Only the lung bases are in this CT: it tests the diaphragm region, not apices.',
  '',
  '| grid | left lung Dice | right lung Dice |',
  '|---|---|---|',
  ...rows.map((r) => `| ${r.grid} | ${f(r.left)} | ${f(r.right)} |`),
].join('\n');
process.stdout.write(`${JSON.stringify({ rows, markdown })}\n`);
