/**
 * Training and service preprocessing agree on real images (issue 10: "Make the training preprocessing match what
 * the service feeds the models, and test that they agree").
 *
 * - The same doctor-labelled TEST slice through both paths: the training path (models/training/real_data.py
 *   load_doctor: calibrated HU → 1 mm grid → window, PyTorch) and the service path (the slab DICOM from
 *   test/helpers/real-slab.py read by ctgate's own reader, resampled to the lesion model's manifest grid and windowed
 *   with resample.ts / applyWindow exactly as src/inference/pipeline.ts does). The two 1 mm grids differ slightly
 *   (training keeps the crop's first and last pixel centres, the service keeps the slab's origin), so the service
 *   slice is sampled at the physical position of every training pixel; compared over the crop less a 2 mm border
 *   (where the service grid also sees the soft-tissue ring around the crop).
 * - The JPEG → HU calibration (real_data.calibration) on real HU CT: the LIDC slice rendered to 8 bits with two
 *   lung-type windows, cropped to its lung bounding box, mapped back.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSeriesFromFiles } from '../../src/cli/analyze.js';
import { applyWindow } from '../../src/imaging/preprocess.js';
import { resample, resampledGeometry } from '../../src/imaging/resample.js';
import { patientToVoxel, voxelToPatient } from '../../src/imaging/volume.js';
import { parseManifest } from '../../src/inference/manifest.js';
import { PYTHON, realSlab } from '../helpers/real-slab.js';
import { unlessPresent } from '../helpers/requires.js';

const DATA = '../shared/data';
const MANIFEST = 'models/manifest.json';

function hasPython(modules: string): boolean {
  try {
    execFileSync(PYTHON, ['-c', `import ${modules}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

interface TrainingInput {
  name: string;
  /** [rows, columns] of the 1 mm training grid. */
  shape: [number, number];
  ct: string;
  cropShape: [number, number];
  pixelMm: number;
  window: [number, number];
  calibration: { slope: number; intercept: number };
}

interface CalibrationWindow {
  window: [number, number];
  slope: number;
  intercept: number;
  peaks: { lungPeak: number; softPeak: number };
  idealSlope: number;
  idealIntercept: number;
  meanAbsErrorHu: number;
  meanErrorHu: number;
  medianLungHu: number;
}

const helper = (args: string[]) => execFileSync(PYTHON, ['test/helpers/real-preprocessing.py', ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });

describe('training vs service preprocessing on a real slice', {
  skip: unlessPresent(
    !existsSync(join(DATA, 'covid-slices-train'))
      ? `${DATA}/covid-slices-train not present`
      : !existsSync(MANIFEST)
        ? `${MANIFEST} not present`
        : !hasPython('pydicom, numpy, PIL, torch')
          ? `${PYTHON} with pydicom, numpy, PIL and torch not present (bash .ci/setup.sh)`
          : false,
  ),
}, () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-real-pre-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('the service feeds the lesion model what training fed it: mean |difference| ≤ 0.02 on the middle slice', async () => {
    const manifest = parseManifest(JSON.parse(await readFile(MANIFEST, 'utf8')), MANIFEST);
    const { spacing, window } = manifest.lesion.input as { spacing: [number, number, number]; window: [number, number] };
    const slab = realSlab(join(root, 'doctor'), ['--doctor', 'largest']);
    const train = JSON.parse(helper(['training-input', slab.name])) as TrainingInput;
    assert.deepEqual(train.cropShape, [slab.crop.height, slab.crop.width]);
    assert.equal(train.pixelMm, slab.pixelMm);

    // Service path, as runPipeline: HU volume → manifest grid (trilinear) → window.
    const series = await loadSeriesFromFiles([join(root, 'doctor')]);
    const g = series.volume.geometry;
    const grid = resampledGeometry(g, spacing);
    const ct = applyWindow(resample(series.volume.data, g, grid, 'linear'), window);
    const [mx, my] = grid.size;
    const k = Math.floor((grid.size[2] - 1) / 2);
    const kSrc = Math.floor((g.size[2] - 1) / 2);
    const at = (x: number, y: number) => ct[(k * my + y) * mx + x] as number;
    const bilinear = (x: number, y: number) => {
      const x0 = Math.min(Math.max(Math.floor(x), 0), mx - 2);
      const y0 = Math.min(Math.max(Math.floor(y), 0), my - 2);
      const fx = x - x0;
      const fy = y - y0;
      return (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
    };

    // Training path: 1 mm grid spanning the crop's first to last pixel centre.
    const [th, tw] = train.shape;
    const trainCt = new Float32Array(Buffer.from(train.ct, 'base64').buffer.slice(0));
    assert.equal(trainCt.length, th * tw);
    const { x0, y0, width, height } = slab.crop;
    const stepX = (width - 1) / (tw - 1);
    const stepY = (height - 1) / (th - 1);
    const borderPx = Math.ceil(2 / slab.pixelMm);
    let sum = 0;
    let max = 0;
    let n = 0;
    let naive = 0;
    for (let j = 0; j < th; j++) {
      const v = j * stepY;
      if (v < borderPx || v > height - 1 - borderPx) continue;
      for (let i = 0; i < tw; i++) {
        const u = i * stepX;
        if (u < borderPx || u > width - 1 - borderPx) continue;
        const p = patientToVoxel(grid, voxelToPatient(g, x0 + u, y0 + v, kSrc));
        const d = Math.abs(bilinear(p[0], p[1]) - (trainCt[j * tw + i] as number));
        // For comparison only: the same pixel index on the service grid, no alignment.
        const xi = Math.round((x0 * slab.pixelMm) / spacing[0] + i);
        const yi = Math.round((y0 * slab.pixelMm) / spacing[1] + j);
        if (xi < mx && yi < my) naive += Math.abs(at(xi, yi) - (trainCt[j * tw + i] as number));
        sum += d;
        max = Math.max(max, d);
        n++;
      }
    }
    const mean = sum / n;
    process.stdout.write(
      `# preprocessing agreement, doctor test slice ${slab.name}: training grid ${tw}×${th} (${stepX.toFixed(4)}×${stepY.toFixed(4)} crop px = ` +
        `${(stepX * slab.pixelMm).toFixed(4)}×${(stepY * slab.pixelMm).toFixed(4)} mm), service grid ${spacing.join('×')} mm, window ` +
        `[${window.join(', ')}] (training [${train.window.join(', ')}]); mean |difference| ${mean.toFixed(4)} (max ${max.toFixed(4)}) over ${n} pixels; ` +
        `unaligned (same index) ${(naive / n).toFixed(4)}\n`,
    );
    assert.deepEqual(window, train.window, 'the manifest window is the one training used');
    assert.ok(mean <= 0.02, `mean |training − service| ${mean.toFixed(4)} > 0.02`);
  });
});

describe('JPEG → HU calibration on real HU CT (LIDC slice)', {
  skip: unlessPresent(
    !existsSync(join(DATA, 'lidc-chest', '0.dcm'))
      ? `${DATA}/lidc-chest not present`
      : !hasPython('pydicom, numpy, PIL')
        ? `${PYTHON} with pydicom, numpy and PIL not present`
        : false,
  ),
}, () => {
  it('maps 8-bit renderings of two lung windows back to HU within 150 HU in the lung, consistently across windows', () => {
    const r = JSON.parse(helper(['calibration', '-1100,200', '-1350,150'])) as {
      bbox: number[];
      lungPixels: number;
      windows: CalibrationWindow[];
    };
    for (const w of r.windows) {
      process.stdout.write(
        `# calibration, LIDC slice as 8 bits in [${w.window.join(', ')}], lung box ${r.bbox.join(',')} (${r.lungPixels} lung px): ` +
          `HU = ${w.slope.toFixed(3)}·v ${w.intercept.toFixed(1)} (exact: ${w.idealSlope.toFixed(3)}·v ${w.idealIntercept.toFixed(1)}); ` +
          `peaks v=${w.peaks.lungPeak}/${w.peaks.softPeak}; lung |HU error| mean ${w.meanAbsErrorHu.toFixed(1)}, signed mean ${w.meanErrorHu.toFixed(1)} ` +
          `(median lung HU ${w.medianLungHu})\n`,
      );
    }
    // Bound: 150 HU. Measured 131–135 HU, nearly all of it one bias (signed mean ≈ −|mean|): this slice's lung
    // parenchyma peaks at about −730 HU, the calibration assumes LUNG_PEAK_HU = −860 for every image — a spread
    // real lungs have (inspiration, dependent lung, contrast) that no histogram method can undo. 150 leaves room
    // for the window choice and catches a calibration that goes wrong (a missed peak costs hundreds of HU). It is
    // NOT within the training's ±110 HU offset augmentation (models/training/train_real.py): the printed figure
    // says by how much, and a model that must work on such lungs needs a wider offset range.
    for (const w of r.windows) assert.ok(w.meanAbsErrorHu < 150, `window [${w.window.join(', ')}]: mean |HU error| ${w.meanAbsErrorHu.toFixed(1)} ≥ 150`);
    // What the calibration itself controls: the same anatomy in two windows maps to the same HU.
    const [a, b] = r.windows as [CalibrationWindow, CalibrationWindow];
    assert.ok(Math.abs(a.meanErrorHu - b.meanErrorHu) < 15, `the two windows disagree by ${Math.abs(a.meanErrorHu - b.meanErrorHu).toFixed(1)} HU`);
  });
});
