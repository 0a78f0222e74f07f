/**
 * The screening pipeline (DESIGN.md, "The paper's pipeline"), arrays in and arrays out — no files, no ONNX
 * here (the models are functions, see session.ts for the ONNX ones):
 *
 *   HU volume → model grid (manifest spacing, trilinear) → lung mask (classical) → lung bounding box + margin
 *   → lesion model, tiled with overlap (manifest window) → lesion mask (threshold; lesion regions that overlap
 *     the lungs, see PipelineOptions.lesionScope) → classifier (lung box resized to its input, channels CT +
 *     lesion mask) → probability → verdict
 *   → findings (volumes, % per lung, count, laterality, peripheral share) and the lesion mask on the original
 *     slices (for the SEG and the key images), key slices by lesion area.
 *
 * A study the models cannot judge gets the verdict "not-assessable" with a reason instead of a guess: too few
 * slices or too little z coverage, no lungs in the field of view, or a lung mask too small to be a chest.
 */
import { applyWindow } from '../imaging/preprocess.js';
import { resample, resampledGeometry } from '../imaging/resample.js';
import type { Geometry, HuVolume } from '../imaging/volume.js';
import { patientToVoxel, voxelToPatient } from '../imaging/volume.js';
import { type Category, categorize, DEFAULT_MIN_OPACITY_ML, type KeySlice, keySlices, type LesionMeasurements, measureLesions, verdictOf } from './findings.js';
import { LEFT_LUNG, type LungOptions, RIGHT_LUNG, segmentLungs } from './lungs.js';
import { boundingBox, label3d, squaredDistanceTo } from './morphology.js';
import { runTiled, type TileRun, type TileSpec, tileCount } from './tiling.js';

export interface LungStep {
  /** name@version. */
  id: string;
  /** Grid (mm, x y z) the lung mask is made on. (A manifest's lung window is not used: the method thresholds HU.) */
  spacing: [number, number, number];
  options?: LungOptions;
}

export interface LesionModel {
  id: string;
  spacing: [number, number, number];
  window: [number, number];
  tiles: TileSpec;
  /** Voxels (x, y, z, on the model grid) around the lungs' bounding box that the model was trained with. */
  cropMarginVoxels?: [number, number, number];
  /** Probability at or above which a voxel is lesion. */
  threshold: number;
  run: TileRun;
}

export interface ClassifierModel {
  id: string;
  window: [number, number];
  /** [channels, D, H, W] (z y x) of the input (batch 1). */
  shape: [number, number, number, number];
  /**
   * What each channel holds, by the word before any ':' — 'ct' (windowed CT) or 'lesion' / 'lesion_mask' / 'mask'
   * (the lesion mask).
   */
  channels: string[];
  threshold: number;
  /** Lesion volume (mL) below which the study has no significant opacity (manifest; default DEFAULT_MIN_OPACITY_ML). */
  minOpacityMl?: number;
  /** Probability (0..1) that the study is COVID-19-like. */
  run: (input: Float32Array, dims: [number, number, number, number]) => Promise<number>;
}

export interface PipelineModels {
  lung: LungStep;
  lesion: LesionModel;
  classifier: ClassifierModel;
  /** Where the models run ('cpu', 'cuda', …), as reported by whoever made them. */
  executionProvider: string;
}

/** The pipeline's steps, in order (steps of the analyze stage, not stages of a job). */
export type Step = 'check' | 'resample' | 'lungs' | 'lesions' | 'classify' | 'findings';

export interface Progress {
  /** The step (the key stays `stage`: the analyze stage passes it on as its progress detail). */
  stage: Step;
  /** Units done and total within the step (tiles for 'lesions'; 0/1 → 1/1 for the others). */
  done: number;
  total: number;
}

export interface PipelineOptions {
  /** Margin (mm) around the lungs' bounding box when the lesion model states none (cropMarginVoxels). Default 5. */
  marginMm?: number;
  /** Below this total lung volume (mL) the study is not assessable. Default 500. */
  minLungMl?: number;
  /** Fewer slices than this: not assessable. Default 10. */
  minSlices?: number;
  /** Less z coverage (mm, slices × spacing) than this: not assessable. Default 60. */
  minCoverageMm?: number;
  /** See MeasureOptions. */
  minLesionMl?: number;
  peripheralMm?: number;
  keySliceCount?: number;
  /**
   * Which lesion voxels count: 'lung' — only those inside the lung mask; 'connected' (default) — every lesion
   * region that overlaps the lung mask, whole, and its voxels outside the mask join that lung (dense
   * consolidation is lung that the classical air threshold cannot see; the lesion model can).
   */
  lesionScope?: 'lung' | 'connected';
  /** With lesionScope 'connected': how far (mm) outside the lung mask a lesion may reach. Default 30. */
  maxOutsideLungMm?: number;
  onProgress?: (p: Progress) => void;
  /**
   * Sees each model's input exactly as the service made it; for training on real volumes with the service's own
   * preprocessing (models/training/dump-volume.ts), never used by the service.
   */
  onModelInputs?: (inputs: ModelInputs) => void;
}

/** The models' inputs for one study (see PipelineOptions.onModelInputs); arrays are x fastest, then y, then z. */
export interface ModelInputs {
  /** The lung box on the model grid, [x, y, z] voxels. */
  box: [number, number, number];
  /** The lesion model's input: the CT of the lung box in its window, scaled to [0, 1]. */
  lesionInput: Float32Array;
  /** The lung labels of the lung box (0, RIGHT_LUNG, LEFT_LUNG). */
  lungLabels: Uint8Array;
  /** The lesion mask the classifier saw (after measurement dropped specks). */
  lesionMask: Uint8Array;
  /** The classifier's input and its shape (NCDHW). */
  classifierInput: Float32Array;
  classifierShape: readonly number[];
}

export type Verdict = 'positive' | 'negative' | 'not-assessable';

export interface Findings extends LesionMeasurements {
  keySlices: KeySlice[];
}

export interface PipelineResult {
  /** 'positive' only for the category 'covid-19-like'; 'negative' for 'other-opacity' and 'no-significant-opacity'. */
  verdict: Verdict;
  /** What the models saw (findings.ts, Category): the verdict says COVID-19-like or not; this says it in full. */
  category: Category;
  /** The lesion volume (mL) under which the category is 'no-significant-opacity'. */
  minOpacityMl: number;
  /** Why the study is not assessable. */
  reason?: string;
  probability: number | null;
  /** The classifier's operating threshold the verdict used. */
  threshold: number;
  findings: Findings | null;
  /** Lesion mask (0/1) on the original volume's grid; null when not assessable. */
  lesionMask: Uint8Array | null;
  /** The lung box on the model grid the measurements were made on; null when not assessable. */
  modelGrid: Geometry | null;
  models: string[];
  executionProvider: string;
  timingsMs: Partial<Record<Step, number>>;
  warnings: string[];
}

/** Copies the box [x0, y0, z0] + size out of a volume of size `size`. */
export function cropVolume<T extends Float32Array | Uint8Array>(
  src: T,
  size: readonly [number, number, number],
  origin: readonly [number, number, number],
  box: readonly [number, number, number],
): T {
  const [nx, ny] = size;
  const [x0, y0, z0] = origin;
  const [bx, by, bz] = box;
  const out = new (src.constructor as new (n: number) => T)(bx * by * bz);
  for (let z = 0; z < bz; z++)
    for (let y = 0; y < by; y++) {
      const s = ((z0 + z) * ny + (y0 + y)) * nx + x0;
      out.set(src.subarray(s, s + bx), (z * by + y) * bx);
    }
  return out;
}

/** The geometry of a sub-box of a grid (same spacing and direction). */
export function subGeometry(g: Geometry, origin: readonly [number, number, number], size: readonly [number, number, number]): Geometry {
  return { size: [...size], spacing: [...g.spacing], origin: voxelToPatient(g, origin[0], origin[1], origin[2]), direction: [...g.direction] };
}

/** A grid of `size` voxels spanning the same extent (first to last voxel centre) as g: a resize. */
export function resizedGeometry(g: Geometry, size: readonly [number, number, number]): Geometry {
  const spacing = g.size.map((n, a) => {
    const m = size[a] as number;
    const extent = (n - 1) * (g.spacing[a] as number);
    return m > 1 && extent > 0 ? extent / (m - 1) : (g.spacing[a] as number);
  }) as Geometry['spacing'];
  return { size: [...size], spacing, origin: [...g.origin], direction: [...g.direction] };
}

const LESION_CHANNELS = new Set(['lesion', 'lesion_mask', 'lesion-mask', 'mask']);

/**
 * The classifier's input: every channel resized (trilinear) from the lung box to the model's D × H × W.
 * 'ct' channels are the CT in the classifier's window; lesion channels the lesion mask (0/1, fractional after
 * resizing).
 */
export function classifierInput(model: ClassifierModel, huBox: Float32Array, lesionBox: Uint8Array, box: Geometry): Float32Array {
  const [c, d, h, w] = model.shape;
  const target = resizedGeometry(box, [w, h, d]);
  const per = d * h * w;
  const input = new Float32Array(c * per);
  let ct: Float32Array | undefined;
  let lesion: Float32Array | undefined;
  model.channels.forEach((name, ch) => {
    const key = (name.split(':')[0] as string).trim().toLowerCase();
    let v: Float32Array;
    if (key === 'ct') {
      // Window first, then resize (as the classifier was trained: windowing clips, so the order matters).
      if (!ct) ct = resample(applyWindow(Float32Array.from(huBox), model.window), box, target, 'linear');
      v = ct;
    } else if (LESION_CHANNELS.has(key)) {
      if (!lesion) lesion = resample(lesionBox, box, target, 'linear');
      v = lesion;
    } else throw new Error(`classifier channel "${name}" is not one ctgate can make (ct, lesion_mask)`);
    input.set(v, ch * per);
  });
  return input;
}

function notAssessable(models: PipelineModels, reason: string, timingsMs: PipelineResult['timingsMs'], warnings: string[]): PipelineResult {
  return {
    verdict: 'not-assessable',
    category: 'not-assessable',
    minOpacityMl: models.classifier.minOpacityMl ?? DEFAULT_MIN_OPACITY_ML,
    reason,
    probability: null,
    threshold: models.classifier.threshold,
    findings: null,
    lesionMask: null,
    modelGrid: null,
    models: [models.lung.id, models.lesion.id, models.classifier.id],
    executionProvider: models.executionProvider,
    timingsMs,
    warnings,
  };
}

/**
 * Maps a 0/1 mask on `from` to `to` (trilinear, ≥ 0.5). Outside `from` counts as 0. Only the part of `to` that
 * the mask's bounding box (plus one empty voxel all round, so resampling's edge clamping cannot smear a mask
 * that touches the border) can reach is computed, a slab of slices at a time to bound memory.
 */
export function maskToGrid(mask: Uint8Array, from: Geometry, to: Geometry, slab = 16, threshold = 0.5): Uint8Array {
  const [nx, ny, nz] = to.size;
  const out = new Uint8Array(nx * ny * nz);
  const bb = boundingBox(mask, from.size);
  if (!bb) return out;
  const lo: [number, number, number] = [bb[0] - 1, bb[1] - 1, bb[2] - 1];
  const dims: [number, number, number] = [bb[3] - bb[0] + 3, bb[4] - bb[1] + 3, bb[5] - bb[2] + 3];
  const [fx, fy] = from.size;
  const [dx, dy, dz] = dims;
  const padded = new Uint8Array(dx * dy * dz);
  for (let z = 1; z < dz - 1; z++)
    for (let y = 1; y < dy - 1; y++) {
      const src = ((lo[2] + z) * fy + lo[1] + y) * fx + lo[0] + 1;
      padded.set(mask.subarray(src, src + dx - 2), (z * dy + y) * dx + 1);
    }
  const pg = subGeometry(from, lo, dims);
  // The index range of `to` inside the padded box's corners.
  const rlo = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
  const rhi = [Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY];
  for (const k of [0, dz - 1])
    for (const j of [0, dy - 1])
      for (const i of [0, dx - 1]) {
        const v = patientToVoxel(to, voxelToPatient(pg, i, j, k));
        for (let a = 0; a < 3; a++) {
          rlo[a] = Math.min(rlo[a] as number, v[a] as number);
          rhi[a] = Math.max(rhi[a] as number, v[a] as number);
        }
      }
  const i0 = Math.max(0, Math.floor(rlo[0] as number));
  const j0 = Math.max(0, Math.floor(rlo[1] as number));
  const k0 = Math.max(0, Math.floor(rlo[2] as number));
  const i1 = Math.min(nx - 1, Math.ceil(rhi[0] as number));
  const j1 = Math.min(ny - 1, Math.ceil(rhi[1] as number));
  const k1 = Math.min(nz - 1, Math.ceil(rhi[2] as number));
  if (i1 < i0 || j1 < j0 || k1 < k0) return out;
  const w = i1 - i0 + 1;
  const h = j1 - j0 + 1;
  for (let k = k0; k <= k1; k += slab) {
    const kn = Math.min(slab, k1 - k + 1);
    const part = resample(padded, pg, subGeometry(to, [i0, j0, k], [w, h, kn]), 'linear');
    for (let z = 0; z < kn; z++)
      for (let y = 0; y < h; y++) {
        const src = (z * h + y) * w;
        const dst = ((k + z) * ny + j0 + y) * nx + i0;
        for (let x = 0; x < w; x++) if ((part[src + x] as number) >= threshold) out[dst + x] = 1;
      }
  }
  return out;
}

/**
 * Restricts a lesion mask to the lungs, in place (see PipelineOptions.lesionScope). With 'connected', lesion
 * regions (26-connected) that overlap a lung are kept whole — except voxels farther than maxOutsideMm from the
 * lung mask, a bound on what a misfiring model can add — and their voxels outside the lungs are added to the
 * lung mask on the side where most of the region's in-lung voxels lie.
 */
export function restrictToLungs(
  lesion: Uint8Array,
  lungs: Uint8Array,
  geometry: Pick<Geometry, 'size' | 'spacing'>,
  scope: 'lung' | 'connected',
  maxOutsideMm = 30,
): void {
  const n = lesion.length;
  const size = geometry.size;
  if (scope === 'lung') {
    for (let i = 0; i < n; i++) if (lungs[i] === 0) lesion[i] = 0;
    return;
  }
  // Lesion voxels outside the lungs: drop those beyond maxOutsideMm (distance computed in their box only).
  const outside = new Uint8Array(n);
  let anyOutside = false;
  for (let i = 0; i < n; i++)
    if (lesion[i] !== 0 && lungs[i] === 0) {
      outside[i] = 1;
      anyOutside = true;
    }
  if (!anyOutside) return;
  const bb = boundingBox(outside, size) as [number, number, number, number, number, number];
  const lo = [0, 0, 0];
  const dims = [0, 0, 0];
  for (let a = 0; a < 3; a++) {
    const grow = Math.ceil(maxOutsideMm / (geometry.spacing[a] as number)) + 1;
    lo[a] = Math.max(0, (bb[a] as number) - grow);
    dims[a] = Math.min((size[a] as number) - 1, (bb[a + 3] as number) + grow) - (lo[a] as number) + 1;
  }
  const [lx, ly, lz] = lo as [number, number, number];
  const [bx, by, bz] = dims as [number, number, number];
  const [nx, ny] = size;
  const inLung = new Uint8Array(bx * by * bz);
  for (let z = 0; z < bz; z++)
    for (let y = 0; y < by; y++) {
      const src = ((lz + z) * ny + ly + y) * nx + lx;
      const dst = (z * by + y) * bx;
      for (let x = 0; x < bx; x++) inLung[dst + x] = lungs[src + x] !== 0 ? 1 : 0;
    }
  const d2 = squaredDistanceTo(inLung, dims, geometry.spacing);
  const lim = maxOutsideMm ** 2 + 1e-9;
  for (let z = 0; z < bz; z++)
    for (let y = 0; y < by; y++) {
      const src = ((lz + z) * ny + ly + y) * nx + lx;
      const dst = (z * by + y) * bx;
      for (let x = 0; x < bx; x++) if (outside[src + x] !== 0 && (d2[dst + x] as number) > lim) lesion[src + x] = 0;
    }
  const { labels, sizes } = label3d(lesion, size, 26);
  const right = new Int32Array(sizes.length + 1);
  const left = new Int32Array(sizes.length + 1);
  for (let i = 0; i < n; i++) {
    const c = labels[i] as number;
    if (c === 0) continue;
    if (lungs[i] === RIGHT_LUNG) right[c] = (right[c] as number) + 1;
    else if (lungs[i] === LEFT_LUNG) left[c] = (left[c] as number) + 1;
  }
  for (let i = 0; i < n; i++) {
    const c = labels[i] as number;
    if (c === 0 || lungs[i] !== 0) continue;
    const r = right[c] as number;
    const l = left[c] as number;
    if (r + l === 0) lesion[i] = 0;
    else lungs[i] = l > r ? LEFT_LUNG : RIGHT_LUNG;
  }
}

const elapsed = (t0: number) => Math.round(performance.now() - t0);

/** Runs the whole pipeline on one HU volume. */
/**
 * Lets timers and I/O run between the pipeline's synchronous steps (each holds the event loop for up to a few
 * seconds on a full CT): the worker's lock renewals and progress must not wait for the whole pipeline.
 */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function runPipeline(volume: HuVolume, models: PipelineModels, opts: PipelineOptions = {}): Promise<PipelineResult> {
  const timingsMs: PipelineResult['timingsMs'] = {};
  const warnings: string[] = [];
  const progress = (step: Step, done: number, total: number) => opts.onProgress?.({ stage: step, done, total });
  const g = volume.geometry;
  const nz = g.size[2];

  // Check: enough of a study to judge.
  let t = performance.now();
  progress('check', 0, 1);
  const minSlices = opts.minSlices ?? 10;
  const minCoverage = opts.minCoverageMm ?? 60;
  const coverage = nz * g.spacing[2];
  timingsMs.check = elapsed(t);
  if (nz < minSlices || coverage < minCoverage) {
    return notAssessable(
      models,
      `too small a study: ${nz} slice${nz === 1 ? '' : 's'} covering ${coverage.toFixed(1)} mm along z (at least ${minSlices} slices and ${minCoverage} mm are needed)`,
      timingsMs,
      warnings,
    );
  }
  progress('check', 1, 1);

  // Resample to the model grid (HU, not yet windowed: the lung step thresholds HU).
  t = performance.now();
  progress('resample', 0, 1);
  const lesionModel = models.lesion;
  const grid = resampledGeometry(g, lesionModel.spacing);
  let hu: Float32Array | null = resample(volume.data, g, grid, 'linear');
  timingsMs.resample = elapsed(t);
  progress('resample', 1, 1);
  await yieldToLoop();

  // Lungs, on the lung step's grid (the model grid unless the manifest says otherwise).
  t = performance.now();
  progress('lungs', 0, 1);
  const sameGrid = models.lung.spacing.every((s, a) => Math.abs(s - (lesionModel.spacing[a] as number)) < 1e-6);
  let lungLabels: Uint8Array;
  let lungMl: number;
  if (sameGrid) {
    const seg = segmentLungs({ geometry: grid, data: hu }, models.lung.options);
    lungLabels = seg.labels;
    lungMl = seg.volumesMl.total;
    warnings.push(...seg.warnings);
  } else {
    const lungGrid = resampledGeometry(g, models.lung.spacing);
    const seg = segmentLungs({ geometry: lungGrid, data: resample(volume.data, g, lungGrid, 'linear') }, models.lung.options);
    lungLabels = Uint8Array.from(resample(seg.labels, lungGrid, grid, 'nearest'));
    lungMl = seg.volumesMl.total;
    warnings.push(...seg.warnings);
  }
  timingsMs.lungs = elapsed(t);
  progress('lungs', 1, 1);
  await yieldToLoop();
  const minLung = opts.minLungMl ?? 500;
  const bb = boundingBox(lungLabels, grid.size);
  if (!bb || lungMl === 0) return notAssessable(models, 'no lungs in the field of view (no air-filled lung region inside the body)', timingsMs, warnings);
  if (lungMl < minLung) {
    return notAssessable(models, `lung mask too small: ${lungMl.toFixed(0)} mL (at least ${minLung} mL expected for a chest CT)`, timingsMs, warnings);
  }

  // Lung box (+ margin) on the model grid.
  const marginMm = opts.marginMm ?? 5;
  const lo: [number, number, number] = [0, 0, 0];
  const box: [number, number, number] = [0, 0, 0];
  for (let a = 0; a < 3; a++) {
    const m = lesionModel.cropMarginVoxels?.[a] ?? Math.ceil(marginMm / (grid.spacing[a] as number));
    const start = Math.max(0, (bb[a] as number) - m);
    const end = Math.min((grid.size[a] as number) - 1, (bb[a + 3] as number) + m);
    lo[a] = start;
    box[a] = end - start + 1;
  }
  const boxGeometry = subGeometry(grid, lo, box);
  const huBox = cropVolume(hu, grid.size, lo, box);
  hu = null;
  const lungBox = cropVolume(lungLabels, grid.size, lo, box);

  // Lesion model, tiled.
  t = performance.now();
  const nTiles = tileCount(box, lesionModel.tiles);
  progress('lesions', 0, nTiles);
  await yieldToLoop();
  const ctBox = applyWindow(Float32Array.from(huBox), lesionModel.window);
  const prob = await runTiled(ctBox, box, lesionModel.tiles, lesionModel.run, (done, total) => progress('lesions', done, total));
  const lesionBox = new Uint8Array(prob.length);
  for (let i = 0; i < prob.length; i++) lesionBox[i] = (prob[i] as number) >= lesionModel.threshold ? 1 : 0;
  await yieldToLoop();
  restrictToLungs(lesionBox, lungBox, boxGeometry, opts.lesionScope ?? 'connected', opts.maxOutsideLungMm);
  timingsMs.lesions = elapsed(t);
  await yieldToLoop();

  // Measurements first: they drop specks below the size limit, and the classifier sees the same mask.
  t = performance.now();
  const measured = measureLesions(boxGeometry, lungBox, lesionBox, { minLesionMl: opts.minLesionMl, peripheralMm: opts.peripheralMm });
  const findingsMs = performance.now() - t;
  await yieldToLoop();

  // Classifier.
  t = performance.now();
  progress('classify', 0, 1);
  const cls = models.classifier;
  const input = classifierInput(cls, huBox, lesionBox, boxGeometry);
  opts.onModelInputs?.({ box, lesionInput: ctBox, lungLabels: lungBox, lesionMask: lesionBox, classifierInput: input, classifierShape: cls.shape });
  const probability = await cls.run(input, cls.shape);
  if (!Number.isFinite(probability) || probability < 0 || probability > 1) throw new Error(`the classifier returned ${probability}, not a probability`);
  timingsMs.classify = elapsed(t);
  progress('classify', 1, 1);

  // Lesion mask on the original slices, key slices.
  t = performance.now();
  progress('findings', 0, 1);
  await yieldToLoop();
  let lesionMask = maskToGrid(lesionBox, boxGeometry, g);
  if (measured.lesionCount > 0 && !lesionMask.includes(1)) {
    // Every lesion is thinner than the source voxels (coarse slices): show where they partly fill a voxel rather
    // than report lesions that the SEG and key images cannot show.
    lesionMask = maskToGrid(lesionBox, boxGeometry, g, 16, 1e-3);
    warnings.push('the lesions are smaller than the source voxels: the mask on the source slices shows the voxels they partly fill');
  }
  const keys = keySlices(lesionMask, g, opts.keySliceCount ?? 3);
  timingsMs.findings = Math.round(findingsMs + performance.now() - t);
  progress('findings', 1, 1);

  const minOpacityMl = cls.minOpacityMl ?? DEFAULT_MIN_OPACITY_ML;
  const category = categorize({ probability, threshold: cls.threshold, lesionVolumeMl: measured.lesionVolumeMl, minOpacityMl });
  return {
    verdict: verdictOf(category),
    category,
    minOpacityMl,
    probability,
    threshold: cls.threshold,
    findings: { ...measured, keySlices: keys },
    lesionMask,
    modelGrid: boxGeometry,
    models: [models.lung.id, lesionModel.id, cls.id],
    executionProvider: models.executionProvider,
    timingsMs,
    warnings,
  };
}
