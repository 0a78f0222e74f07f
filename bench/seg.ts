/**
 * DICOM SEG encoding of a lesion mask on a 512×512×300 CT grid, beside writing the same bits (the packed frames,
 * i.e. the SEG's Pixel Data) straight to disk in the same run. Two cases: lesion blobs on ~5 % of the slices and
 * a heavy one on ~40 %.
 * Run: node --import tsx bench/seg.ts [--repeat 5]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Geometry } from '../src/imaging/volume.js';
import type { ResultContext } from '../src/results/context.js';
import { packFrames } from '../src/results/seg/bits.js';
import { encodeSeg } from '../src/results/seg/encode.js';
import { deterministicUid } from '../src/synthetic/dicom-writer.js';
import { slicesOf, syntheticResult } from '../test/helpers/result-context.js';

const { values } = parseArgs({ options: { repeat: { type: 'string', default: '5' } } });
const repeat = Number(values.repeat);

const size: [number, number, number] = [512, 512, 300];
const [nx, ny, nz] = size;
const geometry: Geometry = { size, spacing: [0.7, 0.7, 1], origin: [-179, -179, -150], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };

/** Ellipsoid lesion blobs [cx, cy, cz, rx, ry, rz] (voxels) painted into a mask. */
function blobs(list: [number, number, number, number, number, number][]): Uint8Array {
  const mask = new Uint8Array(nx * ny * nz);
  for (const [cx, cy, cz, rx, ry, rz] of list) {
    for (let z = Math.max(0, cz - rz); z <= Math.min(nz - 1, cz + rz); z++)
      for (let y = Math.max(0, cy - ry); y <= Math.min(ny - 1, cy + ry); y++)
        for (let x = Math.max(0, cx - rx); x <= Math.min(nx - 1, cx + rx); x++)
          if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1) mask[x + y * nx + z * nx * ny] = 1;
  }
  return mask;
}

const cases: { name: string; mask: Uint8Array }[] = [
  // Two small lesions over 15 of 300 slices.
  {
    name: 'light (~5% of slices)',
    mask: blobs([
      [150, 220, 100, 25, 20, 4],
      [360, 260, 200, 30, 30, 5],
    ]),
  },
  // Bilateral lesions, ground-glass-sized, across 120 slices.
  {
    name: 'heavy (~40% of slices)',
    mask: blobs([
      [140, 250, 60, 70, 90, 20],
      [370, 250, 75, 70, 90, 20],
      [150, 230, 120, 60, 80, 20],
      [360, 270, 150, 80, 70, 18],
      [160, 260, 165, 50, 60, 10],
    ]),
  },
];

// A context skeleton from the small synthetic study, with the big grid and its slices swapped in.
const base = syntheticResult({ seed: 1, kind: 'covid', size: [32, 32, 4] }).context;
const seriesUid = deterministicUid('bench|series');
const slices = slicesOf(geometry, seriesUid, (k) => deterministicUid(`bench|instance|${k}`));

function time(fn: () => void): number {
  fn();
  const out: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const t = performance.now();
    fn();
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b)[Math.floor(out.length / 2)] as number;
}

const dir = mkdtempSync(join(tmpdir(), 'ctgate-bench-seg-'));
try {
  console.log(`SEG of a ${size.join('×')} lesion mask, median of ${repeat} (one thread)`);
  for (const c of cases) {
    const ctx: ResultContext = {
      ...base,
      series: { ...base.series, seriesInstanceUid: seriesUid, slices, geometry },
      analysis: { ...base.analysis, lesionMask: c.mask },
    };
    const frameLength = nx * ny;
    const nonEmpty: number[] = [];
    for (let z = 0; z < nz; z++) if (c.mask.subarray(z * frameLength, (z + 1) * frameLength).some((v) => v !== 0)) nonEmpty.push(z);
    const packed = packFrames(
      nonEmpty.map((z) => c.mask.subarray(z * frameLength, (z + 1) * frameLength)),
      frameLength,
    );
    const raw = time(() => writeFileSync(join(dir, 'mask.bin'), packed));
    let bytes = 0;
    const encodeOnly = time(() => {
      bytes = encodeSeg(ctx).bytes.length;
    });
    const seg = time(() => writeFileSync(join(dir, 'seg.dcm'), encodeSeg(ctx).bytes));
    console.log(
      `  ${c.name}: ${nonEmpty.length}/${nz} slices → ${nonEmpty.length} frames, packed mask ${(packed.length / 2 ** 20).toFixed(2)} MiB, SEG ${(bytes / 2 ** 20).toFixed(2)} MiB`,
    );
    console.log(`    baseline: write the packed mask     ${raw.toFixed(1).padStart(8)} ms`);
    console.log(`    encodeSeg                          ${encodeOnly.toFixed(1).padStart(8)} ms`);
    console.log(`    encodeSeg + write the SEG          ${seg.toFixed(1).padStart(8)} ms  (${(seg / raw).toFixed(1)}× the baseline)`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
